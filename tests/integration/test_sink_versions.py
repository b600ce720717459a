"""The sink's version guards on a real MongoDB-wire server (ADR 0005): documents never move
backwards, a tombstone stays a tombstone within its epoch, and a replay's epoch outranks both."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.records import lead_change, lead_removal
from core.lead import LeadSummary, LeadView
from store.plan import plan_writes

pytestmark = pytest.mark.integration

PROJECT = "prj_sinkversions"
NOW = 1_780_000_000_000_000


def upsert(lead_id: str, version: int, event_count: int, epoch: int = 1) -> dict[str, Any]:
    summary = LeadSummary(
        PROJECT,
        lead_id,
        score=float(event_count),
        last_timestamp=NOW,
        first_timestamp=NOW,
        event_count=event_count,
        version=version,
    )
    view = LeadView(summary, float(event_count), "cold", 0, 0, NOW)
    parsed: dict[str, Any] = orjson.loads(lead_change("upsert", view, epoch=epoch))
    return parsed


def removal(lead_id: str, epoch: int = 1) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(lead_removal(PROJECT, lead_id, "owner", NOW, epoch=epoch))
    return parsed


async def write(collection: Any, *batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Each batch as the sink writes it; returns the lead's document afterwards."""
    for changes in batches:
        plan = plan_writes(changes, datetime.now(UTC))
        await collection.bulk_write(plan.leads, ordered=False)
    doc: dict[str, Any] = await collection.find_one({"projectId": PROJECT}, {"_id": 0})
    return doc


@pytest.fixture
async def leads(mongo_db: Any, request: pytest.FixtureRequest) -> Any:
    collection = mongo_db[f"sink_versions_{request.node.name[:40]}"]
    await collection.drop()
    return collection


async def test_an_older_upsert_written_later_does_not_move_a_document_back(leads: Any) -> None:
    doc = await write(leads, [upsert("a", 5, 5)], [upsert("a", 4, 4)], [upsert("a", 5, 4)])
    assert (doc["version"] & 0xFFFF, doc["eventCount"]) == (5, 5)


async def test_a_tombstone_outranks_a_document_a_crash_left_at_a_higher_lead_version(
    leads: Any,
) -> None:
    # a worker killed after its LeadChanges for versions 44 and 45 reached Kafka, but before
    # their table writes did: the redo merges the lead from version 43
    doc = await write(leads, [upsert("a", 44, 44)], [upsert("a", 45, 45)], [removal("a")])
    assert doc["merged"] is True and "eventCount" not in doc and "currentScore" not in doc, doc
    # and no change of the same epoch brings it back
    doc = await write(leads, [upsert("a", 46, 46)], [removal("a"), upsert("a", 47, 47)])
    assert doc["merged"] is True and "eventCount" not in doc, doc


async def test_a_replay_under_a_new_epoch_outranks_a_tombstone(leads: Any) -> None:
    await write(leads, [upsert("a", 3, 3)], [removal("a")])
    doc = await write(leads, [upsert("a", 1, 1, epoch=2)])
    assert "merged" not in doc and doc["eventCount"] == 1, doc
