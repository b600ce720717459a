"""Records on leadscore's own topics: projects and lead changes (camelCase, as in MongoDB)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any, Literal

import orjson
from bson import encode as bson_encode
from bson.errors import InvalidDocument
from pydantic import BaseModel, ConfigDict, Field

from core.config import DEFAULT_RULES, Rule, ScoringConfig, StageThresholds
from core.events import Event, FieldError
from core.lead import HistoryRow, LeadView
from core.timeutil import format_timestamp, parse_timestamp

__all__ = [
    "LEAD_CHANGE_SCHEMA",
    "ProjectRecord",
    "ProjectSettings",
    "RuleModel",
    "StageThresholdsModel",
    "history_row_json",
    "lead_change",
    "lead_changes",
    "lead_json",
    "lead_removal",
    "split_by_bytes",
    "storability_errors",
]

LEAD_CHANGE_SCHEMA = 1


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: int = Field(ge=-1_000_000, le=1_000_000)
    active: bool = True


class StageThresholdsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qualified: float = 100.0
    hot: float = 60.0
    warm: float = 30.0


class ProjectSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graceDays: int = Field(default=7, ge=0, le=3650)
    dailyRate: float = Field(default=0.05, ge=0.0, le=1.0)
    stageThresholds: StageThresholdsModel = Field(default_factory=StageThresholdsModel)


def default_rules() -> dict[str, RuleModel]:
    return {t: RuleModel(points=r.points, active=r.active) for t, r in DEFAULT_RULES.items()}


class ProjectRecord(BaseModel):
    """A project as kept in MongoDB and published on the compacted projects topic."""

    model_config = ConfigDict(extra="ignore")
    projectId: str
    name: str
    keyHashes: list[str] = Field(default_factory=list)
    rules: dict[str, RuleModel] = Field(default_factory=default_rules)
    settings: ProjectSettings = Field(default_factory=ProjectSettings)
    version: int = 1
    createdAt: str = ""

    @cached_property
    def scoring(self) -> ScoringConfig:
        t = self.settings.stageThresholds
        return ScoringConfig(
            rules={k: Rule(v.points, v.active) for k, v in self.rules.items()},
            thresholds=StageThresholds(qualified=t.qualified, hot=t.hot, warm=t.warm),
            grace_days=self.settings.graceDays,
            daily_rate=self.settings.dailyRate,
        )

    def to_wire(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    def to_mongo(self) -> dict[str, Any]:
        """As stored: rules as a list, since event types may contain `.` (a path in MongoDB)."""
        doc = self.model_dump(mode="json")
        doc["rules"] = [{"eventType": t, **r} for t, r in sorted(doc["rules"].items())]
        return doc

    @classmethod
    def from_mongo(cls, doc: dict[str, Any]) -> ProjectRecord:
        rules = doc.get("rules")
        if isinstance(rules, list):
            doc = {
                **doc,
                "rules": {
                    r["eventType"]: {k: v for k, v in r.items() if k != "eventType"} for r in rules
                },
            }
        return cls.model_validate(doc)

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"keyHashes"})


def history_row_json(row: HistoryRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "eventId": row.event_id,
        "eventType": row.event_type,
        "timestamp": format_timestamp(row.timestamp),
        "timestampUs": row.timestamp,
        "points": row.points,
        "scoreBefore": row.score_before,
        "scoreAfter": row.score_after,
    }
    if row.properties is not None:
        out["properties"] = dict(row.properties)
    return out


VERSION_EPOCH_BITS = 40


def materialized_version(epoch: int, lead_version: int) -> int:
    """Versions grow across replays: a rebuild under a new app version outranks older documents."""
    return (epoch << VERSION_EPOCH_BITS) | lead_version


def lead_json(view: LeadView, epoch: int = 0) -> dict[str, Any]:
    s = view.summary
    return {
        "projectId": s.project_id,
        "leadId": s.lead_id,
        "aliases": list(s.aliases),
        "email": s.email,
        "name": s.name,
        "company": s.company,
        "currentScore": view.current_score,
        "leadStage": view.lead_stage,
        "velocityScore": view.velocity_score,
        "eventsLast24h": view.events_last_24h,
        "eventCount": s.event_count,
        "firstEventAt": format_timestamp(s.first_timestamp)
        if s.first_timestamp is not None
        else None,
        "lastEventAt": format_timestamp(s.last_timestamp) if s.last_timestamp is not None else None,
        "scoreAtLastEvent": s.score,
        "emailClaim": list(s.email_claim) if s.email_claim else None,
        "version": materialized_version(epoch, s.version),
        "computedAt": format_timestamp(view.computed_at),
    }


ChangeKind = Literal["upsert", "refresh", "remove"]


# A merged lead never lives again within an epoch, so its tombstone takes the epoch's highest
# version. Its own counter will not do: a worker killed after a LeadChange reached Kafka but
# before the table write that made it did leaves a document at version n, and the redo that
# merges the lead from the state before it reuses n (ADR 0005).
TOMBSTONE_LEAD_VERSION = (1 << VERSION_EPOCH_BITS) - 1


def lead_removal(project_id: str, lead_id: str, merged_into: str, now: int, *, epoch: int) -> bytes:
    """The LeadChange of a lead merged into another: its document becomes a tombstone that
    outranks every document of the lead in this epoch."""
    return orjson.dumps(
        {
            "schema": LEAD_CHANGE_SCHEMA,
            "kind": "remove",
            "lead": {
                "projectId": project_id,
                "leadId": lead_id,
                "version": materialized_version(epoch, TOMBSTONE_LEAD_VERSION),
                "mergedInto": merged_into,  # informational; the tombstone says merged: true
                "computedAt": format_timestamp(now),
            },
            "history": [],
        }
    )


def lead_change(
    kind: ChangeKind, view: LeadView, rows: Iterable[HistoryRow] = (), *, epoch: int = 0
) -> bytes:
    """A LeadChange: the lead as of its `version`, plus the history rows that changed."""
    return orjson.dumps(
        {
            "schema": LEAD_CHANGE_SCHEMA,
            "kind": kind,
            "lead": lead_json(view, epoch),
            "history": [history_row_json(r) for r in rows],
        }
    )


def lead_changes(
    kind: ChangeKind,
    view: LeadView,
    rows: Iterable[HistoryRow] = (),
    *,
    epoch: int = 0,
    max_bytes: int,
) -> list[bytes]:
    """One LeadChange split into messages of at most `max_bytes` (encoded), each carrying the
    whole lead at the same version and a run of the rows.

    The sink guards each history row by version, so parts of one change apply in any order and
    any number of times; the lead document is written by the first part to arrive and left
    alone by the others (same version). A late event on a lead with thousands of later events
    rewrites all of their rows — one message would outgrow the producer's limit.
    """
    head = orjson.dumps(
        {"schema": LEAD_CHANGE_SCHEMA, "kind": kind, "lead": lead_json(view, epoch), "history": []}
    )
    encoded = [orjson.dumps(history_row_json(r)) for r in rows]
    if not encoded:
        return [head]
    base = head[:-2]  # up to `"history":[`, closed again below
    return [
        base + b",".join(part) + b"]}"
        for part in split_by_bytes(encoded, max_bytes - len(head), separator=1)
    ]


def split_by_bytes(items: Iterable[bytes], budget: int, *, separator: int = 1) -> list[list[bytes]]:
    """Encoded items in runs whose total size (plus `separator` bytes between items) stays
    within `budget`; an item larger than the budget travels alone (its size is bounded by the
    event limits of SPEC 2, far below any broker's limit)."""
    parts: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for item in items:
        extra = len(item) + (separator if current else 0)
        if current and size + extra > budget:
            parts.append(current)
            current, size, extra = [], 0, len(item)
        current.append(item)
        size += extra
    if current:
        parts.append(current)
    return parts


_MIN_TIMESTAMP = parse_timestamp("1970-01-01T00:00:00+00:00")
_MAX_TIMESTAMP = parse_timestamp("9999-12-31T23:59:59.999999+00:00")


def storability_errors(event: Event) -> list[FieldError]:
    """What would keep a valid-looking event from being written to the tables, the topics and
    MongoDB and read back unchanged (SPEC 12).

    The consumers check this before any table write: the events topic is a public wire format,
    and a record produced by another client (or logged before the API refused such values) must
    be dead-lettered whole, not fail half-way through — leaving a lead, the sweep or the sink
    tripping over it on every pass.
    """
    errors: list[FieldError] = []
    if not _MIN_TIMESTAMP <= event.timestamp <= _MAX_TIMESTAMP:
        errors.append(FieldError("timestamp", "must lie between 1970-01-01 and 9999-12-31 (UTC)"))
    if event.properties:
        try:
            bson_encode({"properties": event.properties})
        except (InvalidDocument, OverflowError, ValueError, TypeError) as exc:
            errors.append(FieldError("properties", f"cannot be stored: {exc}"))
    return errors
