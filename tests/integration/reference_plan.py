"""The test oracle of `store.plan`: the write planner as first designed (one `$cond` per field),
kept verbatim so that tests/integration/test_store_plan.py can hold the store's cheaper update
shapes to exactly the documents these gave. Not used by the product.

LeadChanges → MongoDB operations: coalesced per lead and row, idempotent and monotonic (pure).

Every write is guarded by the version it carries, so replaying any suffix of lead-changes, or
writing the same batch twice, never moves a document backwards. Two upserts racing to insert the
same new document can still meet on the unique index (error 11000); the sink ignores that,
since the document it lost to is at least as new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteMany, UpdateOne

from core.timeutil import parse_timestamp, to_datetime

__all__ = ["DUPLICATE_KEY", "MaterializationPlan", "plan_writes"]

DUPLICATE_KEY = 11000

_LEAD_FIELDS = (
    "aliases",
    "email",
    "name",
    "company",
    "currentScore",
    "leadStage",
    "velocityScore",
    "eventsLast24h",
    "eventCount",
    "scoreAtLastEvent",
    "emailClaim",
    "version",
)
_REFRESH_FIELDS = ("currentScore", "leadStage", "velocityScore", "eventsLast24h")
_TOMBSTONE_DROPS = (
    *(f for f in _LEAD_FIELDS if f != "version"),
    "firstEventAt",
    "firstEventAtUs",
    "lastEventAt",
    "lastEventAtUs",
    "computedAt",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _date(text: str | None) -> datetime | None:
    return None if text is None else to_datetime(parse_timestamp(text))


@dataclass
class MaterializationPlan:
    leads: list[UpdateOne] = field(default_factory=list)
    # the upsert behind each op in `leads` (None for refreshes and tombstones), so that the sink
    # can settle an email-index conflict and rewrite the op
    lead_upserts: list[LeadUpsert | None] = field(default_factory=list)
    history: list[UpdateOne] = field(default_factory=list)
    history_removals: list[DeleteMany] = field(default_factory=list)  # rows of merged leads


def plan_writes(changes: Iterable[Mapping[str, Any]], now: datetime) -> MaterializationPlan:
    """Coalesce a batch: the newest state per lead, the newest version of each history row."""
    upserts: dict[tuple[str, str], Mapping[str, Any]] = {}
    refreshes: dict[tuple[str, str], Mapping[str, Any]] = {}
    removals: dict[tuple[str, str], Mapping[str, Any]] = {}
    rows: dict[tuple[str, str, str], tuple[int, Mapping[str, Any]]] = {}
    for change in changes:
        lead = change["lead"]
        ident = (lead["projectId"], lead["leadId"])
        version = lead["version"]
        kind = change["kind"]
        target = upserts if kind == "upsert" else refreshes if kind == "refresh" else removals
        held = target.get(ident)
        if held is None or (held["version"], held["computedAt"]) <= (version, lead["computedAt"]):
            target[ident] = lead
        for row in change.get("history", ()):
            row_ident = (*ident, row["eventId"])
            held_row = rows.get(row_ident)
            if held_row is None or held_row[0] <= version:
                if held_row is not None and "properties" in held_row[1] and "properties" not in row:
                    row = {**row, "properties": held_row[1]["properties"]}  # first write's
                rows[row_ident] = (version, row)

    plan = MaterializationPlan()
    for (pid, lead_id), lead in upserts.items():
        doc = {k: lead[k] for k in _LEAD_FIELDS}
        for name in ("firstEventAt", "lastEventAt"):  # dates to query; µs to show exactly
            doc[name] = _date(lead[name])
            doc[f"{name}Us"] = None if lead[name] is None else parse_timestamp(lead[name])
        doc["computedAt"] = _date(lead["computedAt"])
        doc["updatedAt"] = now
        upsert = LeadUpsert(pid, lead_id, doc, lead["version"])
        plan.leads.append(upsert.op())
        plan.lead_upserts.append(upsert)
    for (pid, lead_id), lead in refreshes.items():
        if (pid, lead_id) in upserts:
            continue  # the upsert in this batch carries fresher or equal figures
        doc = {k: lead[k] for k in _REFRESH_FIELDS}
        computed = _date(lead["computedAt"])
        doc["computedAt"] = computed
        doc["updatedAt"] = now
        same_and_fresher = {
            "$and": [
                {"$eq": ["$version", lead["version"]]},
                {"$lt": [{"$ifNull": ["$computedAt", _EPOCH]}, computed]},
            ]
        }
        plan.leads.append(
            UpdateOne({"projectId": pid, "leadId": lead_id}, _guarded(doc, same_and_fresher))
        )
        plan.lead_upserts.append(None)
    for (pid, lead_id), lead in removals.items():
        # a tombstone, not a delete: an older change replayed later must not resurrect the lead
        newer = {"$lt": [{"$ifNull": ["$version", -1]}, lead["version"]]}
        # `merged: true`, not who absorbed it: merge chains differ with arrival order, the
        # canonical lead's sorted aliases do not (replays reproduce the same documents). The
        # absorbed lead's own figures go too: how many of its events it had scored before the
        # merge reply arrived depends on timing, and they now count for the canonical lead.
        tombstone = _guarded({"merged": True, "version": lead["version"], "updatedAt": now}, newer)
        for gone in _TOMBSTONE_DROPS:
            tombstone[0]["$set"][gone] = {"$cond": [newer, "$$REMOVE", f"${gone}"]}
        plan.leads.append(UpdateOne({"projectId": pid, "leadId": lead_id}, tombstone, upsert=True))
        plan.lead_upserts.append(None)
        plan.history_removals.append(DeleteMany({"projectId": pid, "leadId": lead_id}))
    for (pid, lead_id, event_id), (version, row) in rows.items():
        fields: dict[str, Any] = {
            "eventType": row["eventType"],
            "timestamp": _date(row["timestamp"]),
            "timestampUs": row["timestampUs"],
            "points": row["points"],
            "scoreBefore": row["scoreBefore"],
            "scoreAfter": row["scoreAfter"],
            "v": version,
        }
        update = _guarded(fields, {"$lt": [{"$ifNull": ["$v", -1]}, version]})
        if "properties" in row:  # written once, with the row's first version
            update[0]["$set"]["properties"] = {
                "$ifNull": ["$properties", {"$literal": row["properties"]}]
            }
        plan.history.append(
            UpdateOne(
                {"projectId": pid, "leadId": lead_id, "eventId": event_id}, update, upsert=True
            )
        )
    return plan


@dataclass(frozen=True)
class LeadUpsert:
    project_id: str
    lead_id: str
    doc: Mapping[str, Any]
    version: int

    def op(self, *, without_email: bool = False) -> UpdateOne:
        """The version-guarded upsert; `without_email` when a lead with an earlier claim on
        the same email holds it (this lead is about to be merged into that one)."""
        doc = dict(self.doc)
        if without_email:
            doc.pop("email", None)
            doc.pop("emailClaim", None)
        newer = {"$lt": [{"$ifNull": ["$version", -1]}, self.version]}
        update = _guarded(doc, newer)
        # a live lead (e.g. rebuilt by a replay) is no tombstone, whatever an older epoch said
        gone = ["merged", *(("email", "emailClaim") if without_email else ())]
        for name in gone:
            update[0]["$set"][name] = {"$cond": [newer, "$$REMOVE", f"${name}"]}
        return UpdateOne(
            {"projectId": self.project_id, "leadId": self.lead_id}, update, upsert=True
        )


def _guarded(fields: Mapping[str, Any], condition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An update pipeline setting `fields` only where `condition` holds on the stored document.

    The guard lives in the update, not in the filter: the filter stays an exact match on the
    unique index, which every MongoDB-wire server answers from the index (a range predicate in
    the filter made the test server scan the collection). `$literal` keeps user strings that
    start with `$` from being read as field paths.
    """
    return [
        {
            "$set": {
                name: {"$cond": [condition, {"$literal": value}, f"${name}"]}
                for name, value in fields.items()
            }
        }
    ]
