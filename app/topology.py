"""The whole topology in one place: every topic, table, service and agent of a worker.

leadscore.events ─┐   key "{projectId}:{leadKey}"         (any Kafka client, HTTP ingest)
leadscore.lead-commands ─┤ (misrouted records, re-keyed)
                  ▼
agents.scoring ── tables leads / lead-facts / event-ids (RocksDB + changelogs)
      │ invalid ─────────► leadscore.dead-letter
      ▼
leadscore.lead-changes (key: canonical lead) ──► agents.sink ──► MongoDB leads, score_history
agents.sweep (timer) ─────► leadscore.lead-changes (refresh of decayed scores)
leadscore.projects (compacted) ──► app.projects.ProjectDirectory (every worker, in memory)
web.* — Faust web views; single-lead reads routed to the table owner
"""

from __future__ import annotations

from app.faust_app import app
from app.mongo import Mongo
from app.projects import ProjectDirectory
from app.settings import settings

__all__ = [
    "app",
    "commands_topic",
    "dead_letter_topic",
    "directory",
    "events_topic",
    "lead_changes_topic",
    "mongo",
    "projects_topic",
    "scoring_source",
]

# Values are our own JSON (decoded with orjson, bad records dead-lettered), keys raw UTF-8.
_RAW = {"key_serializer": "raw", "value_serializer": "raw"}

events_topic = app.topic(settings.topic("events"), key_type=bytes, value_type=bytes, **_RAW)
commands_topic = app.topic(
    settings.topic("lead-commands"), key_type=bytes, value_type=bytes, **_RAW
)
scoring_source = app.topic(
    settings.topic("events"),
    settings.topic("lead-commands"),
    key_type=bytes,
    value_type=bytes,
    **_RAW,
)
lead_changes_topic = app.topic(
    settings.topic("lead-changes"), key_type=bytes, value_type=bytes, **_RAW
)
dead_letter_topic = app.topic(
    settings.topic("dead-letter"), key_type=bytes, value_type=bytes, **_RAW
)
projects_topic = app.topic(settings.topic("projects"), key_type=bytes, value_type=bytes, **_RAW)

directory = ProjectDirectory(settings)
app.service(directory)  # type: ignore[arg-type]
mongo = Mongo(settings)
