"""The names `leadscore clean-versions` deletes by: every table of a worker, exact topic names."""

from __future__ import annotations

from app.replay import TABLES, app_id, internal_topics
from app.settings import Settings


def test_clean_versions_knows_every_table_of_a_worker() -> None:
    from app.worker import app  # registers every agent and table, connects to nothing

    assert sorted(app.tables.keys()) == sorted(TABLES)


def test_internal_topics_of_an_epoch_are_exact_names() -> None:
    settings = Settings.from_env()
    p = settings.topic_prefix
    assert app_id(settings, 1) == p and app_id(settings, 3, "ingest") == f"{p}-ingest-v3"
    assert internal_topics(settings, 2) == [
        f"{p}-v2-lead-state-changelog",
        f"{p}-v2-email-owners-changelog",
        f"{p}-v2-__assignor-__leader",
        f"{p}-ingest-v2-__assignor-__leader",
        f"{p}-sink-v2-__assignor-__leader",
        f"{p}-delivery-v2-__assignor-__leader",
    ]
