"""The pure write planner (`store.plan`): coalescing and the shape of each write.

The documents these writes leave on a real server are held to the first design's by
tests/integration/test_store_plan.py; this pins the planner's own decisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import DeleteMany, InsertOne, UpdateOne

from app.records import lead_change, lead_removal
from core.lead import HistoryRow, LeadSummary, LeadView
from store.plan import plan_writes

PROJECT = "prj_unitplan"
T0 = 1_780_000_000_000_000
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def change(
    lead_id: str, version: int, rows: list[HistoryRow], kind: str = "upsert"
) -> dict[str, Any]:
    summary = LeadSummary(PROJECT, lead_id, score=1.0, last_timestamp=T0, version=version)
    view = LeadView(summary, 1.0, "cold", 0, 0, T0 + version)
    parsed: dict[str, Any] = orjson.loads(lead_change(kind, view, rows))  # type: ignore[arg-type]
    return parsed


def row(event_id: str, score_after: float, properties: dict[str, Any] | None) -> HistoryRow:
    return HistoryRow(event_id, "page_view", T0, 5, score_after - 5, score_after, properties)


def test_a_batch_is_one_write_per_lead_and_row_the_newest_version_winning() -> None:
    plan = plan_writes(
        [
            change("a", 1, [row("e1", 5.0, {"p": 1})]),
            change("a", 2, [row("e2", 10.0, {"p": 2})]),
            change("a", 3, [row("e1", 6.0, None), row("e2", 11.0, None)]),  # a late event
            change("b", 1, [row("e9", 5.0, {"p": 9})]),
        ],
        NOW,
    )
    assert [op._filter["leadId"] for op in plan.leads] == ["a", "b"]
    lead_a = plan.leads[0]._doc[0]["$replaceWith"]["$cond"][1]["$mergeObjects"][1]["$literal"]
    assert lead_a["version"] & 0xFF == 3
    assert [type(op) for op in plan.history] == [InsertOne] * 3
    inserted = {op._doc["eventId"]: op._doc for op in plan.history}
    # the newest version's figures, the first write's properties
    assert (inserted["e1"]["scoreAfter"], inserted["e1"]["properties"]) == (6.0, {"p": 1})
    assert (inserted["e2"]["scoreAfter"], inserted["e2"]["properties"]) == (11.0, {"p": 2})


def test_a_rescored_row_is_a_guarded_upsert_and_every_row_has_one_as_fallback() -> None:
    plan = plan_writes([change("a", 4, [row("e1", 7.0, None)])], NOW)
    (only,) = plan.history
    assert isinstance(only, UpdateOne) and only._upsert
    assert only._filter == {"projectId": PROJECT, "leadId": "a", "eventId": "e1"}
    assert plan.history_fallbacks == [only]
    first = plan_writes([change("a", 1, [row("e1", 5.0, {"p": 1})])], NOW)
    assert isinstance(first.history[0], InsertOne)
    fallback = first.history_fallbacks[0]
    assert isinstance(fallback, UpdateOne) and fallback._upsert
    # the fallback fills in missing properties whatever the version guard says
    stage = fallback._doc[0]["$replaceWith"]
    assert stage["$mergeObjects"][1] == {
        "properties": {"$ifNull": ["$properties", {"$literal": {"p": 1}}]}
    }


def test_every_guarded_write_is_one_replace_with_and_user_strings_stay_literal() -> None:
    summary = LeadSummary(PROJECT, "$lead", name="$name", version=1, last_timestamp=T0)
    view = LeadView(summary, 1.0, "cold", 0, 0, T0)
    upsert = orjson.loads(lead_change("upsert", view))
    plan = plan_writes([upsert], NOW)
    (op,) = plan.leads
    assert op._filter == {"projectId": PROJECT, "leadId": "$lead"}
    (stage,) = op._doc
    cond = stage["$replaceWith"]["$cond"]
    assert cond[2] == "$$ROOT"
    replacement = cond[1]["$mergeObjects"]
    assert replacement[0] == {"_id": "$_id"}
    assert replacement[1]["$literal"]["name"] == "$name"
    assert replacement[1]["$literal"]["leadId"] == "$lead"
    assert "merged" not in replacement[1]["$literal"]


def test_a_merged_lead_becomes_a_tombstone_and_its_rows_go() -> None:
    removal = orjson.loads(lead_removal(PROJECT, "a", "b", T0, epoch=1))
    plan = plan_writes([change("a", 2, [row("e1", 5.0, {"p": 1})]), removal], NOW)
    _, tombstone = plan.leads
    assert plan.lead_upserts[1] is None and plan.lead_upserts[0] is not None
    literal = tombstone._doc[0]["$replaceWith"]["$cond"][1]["$mergeObjects"][1]["$literal"]
    assert set(literal) == {"projectId", "leadId", "merged", "version", "updatedAt"}
    assert literal["merged"] is True
    assert plan.history_removals == [DeleteMany({"projectId": PROJECT, "leadId": "a"})]


def test_a_refresh_of_a_lead_upserted_in_the_same_batch_is_left_out() -> None:
    plan = plan_writes([change("a", 2, []), change("a", 2, [], kind="refresh")], NOW)
    assert len(plan.leads) == 1 and plan.lead_upserts[0] is not None
    refresh_only = plan_writes([change("a", 2, [], kind="refresh")], NOW)
    (op,) = refresh_only.leads
    assert not op._upsert  # a refresh never creates a document
