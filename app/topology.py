"""The whole topology in one place: every topic, table, service and agent of a worker.

::

    leadscore.events ─────────┐ key "{projectId}:{leadKey}" (any Kafka client, HTTP ingest)
    leadscore.lead-commands ──┤ misrouted records re-keyed, alias forwards, identity replies
                              ▼
    agents.scoring ── tables leads / lead-facts / event-ids (RocksDB + changelogs)
       │ invalid ──────► leadscore.dead-letter (with the reason)
       │ identify ─────► leadscore.identity-claims (key "{projectId}:{email}")
       │                   └─► agents.identity ── table email-owners
       │                         reply promote | merge ──► leadscore.lead-commands
       │ merge: the absorbed lead sends its events (absorb) to the owner ──► lead-commands
       ▼
    leadscore.lead-changes (key: lead) ──► agents.sink ──► MongoDB leads, score_history
    agents.sweep (timer) ──► leadscore.lead-changes (refresh of decayed scores)
       │ a rule's trigger met ──► leadscore.automation-firings (key: firing id)
       │                            └─► agents.firing: first wins (MongoDB automation_firings,
       │                                unique _id) ──► app.delivery: webhook / Slack / SMTP
    leadscore.projects (compacted) ──► app.projects.ProjectDirectory (every worker, in memory)
       projects with their API keys (hashes, scopes): a revoked key leaves every process at once
    MongoDB users / sessions (app.users, short per-process cache), audit_log, key_usage (batched)
    web.* — Faust web views; single-lead reads proxied to the worker owning the lead
"""

from __future__ import annotations

from faust.types import TopicT

from app.audit import AuditLog
from app.faust_app import app
from app.firings import FiringLog
from app.key_usage import KeyUsage
from app.mongo import Mongo
from app.projects import ProjectDirectory
from app.settings import settings
from app.users import UserStore

__all__ = [
    "app",
    "audit_log",
    "claims_topic",
    "commands_topic",
    "dead_letter_topic",
    "directory",
    "events_topic",
    "firing_log",
    "firings_topic",
    "key_usage",
    "lead_changes_topic",
    "mongo",
    "projects_topic",
    "scoring_source",
    "users",
]


def _topic(*names: str) -> TopicT:
    # Values are our own JSON (decoded with orjson, bad records dead-lettered), keys raw UTF-8.
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


events_topic = _topic(settings.topic("events"))
commands_topic = _topic(settings.topic("lead-commands"))
scoring_source = _topic(settings.topic("events"), settings.topic("lead-commands"))
lead_changes_topic = _topic(settings.topic("lead-changes"))
dead_letter_topic = _topic(settings.topic("dead-letter"))
claims_topic = _topic(settings.topic("identity-claims"))
projects_topic = _topic(settings.topic("projects"))
firings_topic = _topic(settings.topic("automation-firings"))

directory = ProjectDirectory(settings)
app.service(directory)  # type: ignore[arg-type]
mongo = Mongo(settings)
users = UserStore(mongo, settings)
audit_log = AuditLog(mongo)
firing_log = FiringLog(mongo)
key_usage = KeyUsage(mongo, settings)
app.service(key_usage)  # type: ignore[arg-type]
