"""LeadChanges → MongoDB operations: coalesced per lead and row, idempotent and monotonic (pure).

Every write is guarded by the version it carries, so replaying any suffix of lead-changes, or
writing the same batch twice, never moves a document backwards. Two upserts racing to insert the
same new document can still meet on the unique index (error 11000); the sink ignores that,
since the document it lost to is at least as new.

Cheap shapes, same documents (ADR 0023): a history row's first write — nearly every row of a
batch — is a plain insert, which falls back to the guarded upsert when the row exists already
(`MaterializationPlan.history_fallbacks`). Every guarded update is an update pipeline of ONE
`$replaceWith` stage whose single `$cond` evaluates the guard once per document: the guarded
document when the change is newer, `$$ROOT` (untouched) otherwise. The first design's per-field
`$cond` pipelines gave the same documents at about half the MongoDB-wire server's plain `$set`
rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteMany, InsertOne, UpdateOne

from core.timeutil import parse_timestamp, to_datetime

__all__ = ["DUPLICATE_KEY", "LeadUpsert", "MaterializationPlan", "plan_writes"]

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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _date(text: str | None) -> datetime | None:
    return None if text is None else to_datetime(parse_timestamp(text))


@dataclass
class MaterializationPlan:
    leads: list[UpdateOne] = field(default_factory=list)
    # the upsert behind each op in `leads` (None for refreshes and tombstones), so that the sink
    # can settle an email-index conflict and rewrite the op
    lead_upserts: list[LeadUpsert | None] = field(default_factory=list)
    # a row's first write (it carries the event's properties) is a plain insert; if the row is
    # there already (a replay, a redo) the insert fails on the unique index and the sink writes
    # `history_fallbacks[i]` instead: the guarded upsert every other row gets directly
    history: list[InsertOne | UpdateOne] = field(default_factory=list)
    history_fallbacks: list[UpdateOne] = field(default_factory=list)
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
            UpdateOne({"projectId": pid, "leadId": lead_id}, _merged(doc, same_and_fresher))
        )
        plan.lead_upserts.append(None)
    for (pid, lead_id), lead in removals.items():
        # a tombstone, not a delete: an older change replayed later must not resurrect the lead
        newer = {"$lt": [{"$ifNull": ["$version", -1]}, lead["version"]]}
        # `merged: true`, not who absorbed it: merge chains differ with arrival order, the
        # canonical lead's sorted aliases do not (replays reproduce the same documents). The
        # absorbed lead's own figures go too: how many of its events it had scored before the
        # merge reply arrived depends on timing, and they now count for the canonical lead.
        # Every other field of the lead goes, dates included (`_replaced`).
        tombstone = _replaced(
            pid, lead_id, {"merged": True, "version": lead["version"], "updatedAt": now}, newer
        )
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
        newer_row = {"$lt": [{"$ifNull": ["$v", -1]}, version]}
        always: list[Any] = []
        if "properties" in row:  # written once, by the first change that carries them
            always.append(
                {"properties": {"$ifNull": ["$properties", {"$literal": row["properties"]}]}}
            )
        row_key = {"projectId": pid, "leadId": lead_id, "eventId": event_id}
        guarded = UpdateOne(row_key, _merged(fields, newer_row, *always), upsert=True)
        first = "properties" in row
        plan.history.append(
            InsertOne({**row_key, **fields, "properties": row["properties"]}) if first else guarded
        )
        plan.history_fallbacks.append(guarded)
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
        # a live lead (e.g. rebuilt by a replay) is no tombstone, whatever an older epoch said:
        # the replacement has no `merged` (nor `email`/`emailClaim` when `without_email`)
        update = _replaced(self.project_id, self.lead_id, doc, newer)
        return UpdateOne(
            {"projectId": self.project_id, "leadId": self.lead_id}, update, upsert=True
        )


def _replaced(
    pid: str, lead_id: str, fields: Mapping[str, Any], condition: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """An update pipeline replacing the stored lead with `fields` where `condition` holds.

    The planner writes every field a lead document has (the store is the only writer of
    `leads`), so replacing is what the per-field `$set` of each field plus `$unset` of the
    absent ones did, in one evaluation of the guard.

    The guard lives in the update, not in the filter: the filter stays an exact match on the
    unique index, which every MongoDB-wire server answers from the index (a range predicate in
    the filter made the test server scan the collection). `$literal` keeps user strings that
    start with `$` from being read as field paths.
    """
    whole = {"projectId": pid, "leadId": lead_id, **fields}
    replacement = {"$mergeObjects": [{"_id": "$_id"}, {"$literal": whole}]}
    return [{"$replaceWith": {"$cond": [condition, replacement, "$$ROOT"]}}]


def _merged(
    fields: Mapping[str, Any], condition: Mapping[str, Any], *always: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """An update pipeline setting `fields` only where `condition` holds on the stored document
    (other stored fields stay), and the expressions of `always` whatever the condition."""
    guarded = {
        "$cond": [condition, {"$mergeObjects": ["$$ROOT", {"$literal": dict(fields)}]}, "$$ROOT"]
    }
    if always:
        guarded = {"$mergeObjects": [guarded, *always]}
    return [{"$replaceWith": guarded}]
