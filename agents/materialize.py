"""LeadChanges → MongoDB operations: coalesced per lead and row, idempotent and monotonic (pure).

Every write is guarded by the version it carries, so replaying any suffix of lead-changes, or
writing the same batch twice, never moves a document backwards: an upsert whose guard fails on
an existing newer document hits the unique index (error 11000), which the sink treats as
"already newer" and ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import DeleteOne, UpdateOne

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
    "version",
)
_REFRESH_FIELDS = ("currentScore", "leadStage", "velocityScore", "eventsLast24h")


def _date(text: str | None) -> datetime | None:
    return None if text is None else to_datetime(parse_timestamp(text))


@dataclass
class MaterializationPlan:
    leads: list[UpdateOne | DeleteOne] = field(default_factory=list)
    history: list[UpdateOne] = field(default_factory=list)


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
        doc["firstEventAt"] = _date(lead["firstEventAt"])
        doc["lastEventAt"] = _date(lead["lastEventAt"])
        doc["computedAt"] = _date(lead["computedAt"])
        doc["updatedAt"] = now
        plan.leads.append(
            UpdateOne(
                {"projectId": pid, "leadId": lead_id, "version": {"$lt": lead["version"]}},
                {"$set": doc},
                upsert=True,
            )
        )
    for (pid, lead_id), lead in refreshes.items():
        if (pid, lead_id) in upserts:
            continue  # the upsert in this batch carries fresher or equal figures
        doc = {k: lead[k] for k in _REFRESH_FIELDS}
        computed = _date(lead["computedAt"])
        doc["computedAt"] = computed
        doc["updatedAt"] = now
        plan.leads.append(
            UpdateOne(
                {
                    "projectId": pid,
                    "leadId": lead_id,
                    "version": lead["version"],
                    "computedAt": {"$lt": computed},
                },
                {"$set": doc},
            )
        )
    for (pid, lead_id), lead in removals.items():
        plan.leads.append(
            DeleteOne({"projectId": pid, "leadId": lead_id, "version": {"$lt": lead["version"]}})
        )
    for (pid, lead_id, event_id), (version, row) in rows.items():
        update: dict[str, Any] = {
            "$set": {
                "eventType": row["eventType"],
                "timestamp": _date(row["timestamp"]),
                "timestampUs": row["timestampUs"],
                "points": row["points"],
                "scoreBefore": row["scoreBefore"],
                "scoreAfter": row["scoreAfter"],
                "v": version,
            }
        }
        if "properties" in row:
            update["$setOnInsert"] = {"properties": row["properties"]}
        plan.history.append(
            UpdateOne(
                {"projectId": pid, "leadId": lead_id, "eventId": event_id, "v": {"$lt": version}},
                update,
                upsert=True,
            )
        )
    return plan
