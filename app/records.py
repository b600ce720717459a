"""Records on leadscore's own topics: projects, and lead changes built from a lead's view
(typed in `app.wire`; camelCase, as in MongoDB)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any, Literal

import msgspec
import orjson
from msgspec import UNSET
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app import wire
from app.access import SCOPES, KeyRecord
from app.automations import AutomationModel
from app.origins import Origin
from core.automation import AutomationRule
from core.config import DEFAULT_RULES, Rule, ScoringConfig, StageThresholds
from core.lead import HistoryRow, LeadView
from core.timeutil import format_timestamp

__all__ = [
    "LEAD_CHANGE_SCHEMA",
    "MAX_RULE_POINTS",
    "OutgoingChange",
    "ProjectRecord",
    "ProjectSettings",
    "RuleModel",
    "StageThresholdsModel",
    "history_row_json",
    "history_row_record",
    "lead_change",
    "lead_changes",
    "lead_erasure",
    "lead_json",
    "lead_removal",
    "lead_state",
    "split_by_bytes",
]

LEAD_CHANGE_SCHEMA = wire.SCHEMA_VERSION


# Settings and rules are storable by construction (SPEC 12): strict types (a string is never
# read as a number, so "inf" cannot sneak in — issue 10 finding 1), finite numbers in sane
# ranges, and the thresholds' order checked by the model itself, so that every record that
# reaches the projects topic parses again in every process.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
MAX_RULE_POINTS = 1_000_000
"""Rule points are bounded far inside 64 bits: a score is a float64 sum of them."""
MAX_THRESHOLD = 1e12


class RuleModel(BaseModel):
    model_config = _STRICT
    points: int = Field(ge=-MAX_RULE_POINTS, le=MAX_RULE_POINTS)
    active: bool = True


class StageThresholdsModel(BaseModel):
    model_config = _STRICT
    qualified: float = Field(default=100.0, ge=0.0, le=MAX_THRESHOLD)
    hot: float = Field(default=60.0, ge=0.0, le=MAX_THRESHOLD)
    warm: float = Field(default=30.0, ge=0.0, le=MAX_THRESHOLD)

    @model_validator(mode="after")
    def _ordered(self) -> StageThresholdsModel:
        if not self.qualified > self.hot > self.warm >= 0:
            raise ValueError("need qualified > hot > warm >= 0")
        return self


class ProjectSettings(BaseModel):
    model_config = _STRICT
    graceDays: int = Field(default=7, ge=0, le=3650)
    dailyRate: float = Field(default=0.05, ge=0.0, le=1.0)
    stageThresholds: StageThresholdsModel = Field(default_factory=StageThresholdsModel)
    allowedOrigins: list[Origin] = Field(default_factory=list, max_length=100)


def default_rules() -> dict[str, RuleModel]:
    return {t: RuleModel(points=r.points, active=r.active) for t, r in DEFAULT_RULES.items()}


class ProjectRecord(BaseModel):
    """A project as kept in MongoDB and published on the compacted projects topic."""

    model_config = ConfigDict(extra="ignore")
    projectId: str
    name: str
    keys: list[KeyRecord] = Field(default_factory=list)
    rules: dict[str, RuleModel] = Field(default_factory=default_rules)
    settings: ProjectSettings = Field(default_factory=ProjectSettings)
    automations: list[AutomationModel] = Field(default_factory=list)  # SPEC 9
    version: int = 1
    createdAt: str = ""

    @model_validator(mode="before")
    @classmethod
    def _migrate_key_hashes(cls, data: Any) -> Any:
        """Projects written before scoped keys held bare `keyHashes`: each becomes a secret key
        with every scope, so the keys people already use keep working (ADR 0016)."""
        if not isinstance(data, dict) or "keyHashes" not in data:
            return data
        hashes = data["keyHashes"] or []
        data = {k: v for k, v in data.items() if k != "keyHashes"}
        known = {k.get("hash") for k in data.get("keys", []) if isinstance(k, dict)}
        data["keys"] = [
            *data.get("keys", []),
            *(
                {
                    "id": "key_" + h[:16],
                    "name": "key issued before scopes",
                    "kind": "secret",
                    "prefix": "lsk_",
                    "scopes": list(SCOPES),
                    "hash": h,
                    "createdAt": data.get("createdAt", ""),
                }
                for h in hashes
                if h not in known
            ),
        ]
        return data

    @cached_property
    def scoring(self) -> ScoringConfig:
        t = self.settings.stageThresholds
        return ScoringConfig(
            rules={k: Rule(v.points, v.active) for k, v in self.rules.items()},
            thresholds=StageThresholds(qualified=t.qualified, hot=t.hot, warm=t.warm),
            grace_days=self.settings.graceDays,
            daily_rate=self.settings.dailyRate,
        )

    @cached_property
    def active_automations(self) -> list[AutomationRule]:
        return [a.core for a in self.automations if a.active]

    @cached_property
    def automation_by_id(self) -> dict[str, AutomationModel]:
        return {a.id: a for a in self.automations}

    def to_wire(self) -> bytes:
        """The record on the projects topic, checked to parse back to itself: a record that
        does not would stop every process tailing the compacted topic, for ever."""
        wire = orjson.dumps(self.model_dump(mode="json"))
        try:
            same = ProjectRecord.model_validate(orjson.loads(wire)) == self
        except ValidationError as exc:
            message = f"project {self.projectId} does not survive its wire format: {exc}"
            raise ValueError(message) from exc
        if not same:
            raise ValueError(f"project {self.projectId} does not survive its wire format")
        return wire

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
        return self.model_dump(mode="json", exclude={"keys", "automations"})


def history_row_record(row: HistoryRow) -> wire.HistoryRowRecord:
    return wire.HistoryRowRecord(
        event_id=row.event_id,
        event_type=row.event_type,
        timestamp=format_timestamp(row.timestamp),
        timestamp_us=row.timestamp,
        points=row.points,
        score_before=row.score_before,
        score_after=row.score_after,
        properties=UNSET if row.properties is None else dict(row.properties),
    )


def history_row_json(row: HistoryRow) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(history_row_record(row))
    return out


VERSION_EPOCH_BITS = 40


def materialized_version(epoch: int, lead_version: int) -> int:
    """Versions grow across replays: a rebuild under a new app version outranks older documents."""
    return (epoch << VERSION_EPOCH_BITS) | lead_version


def lead_state(view: LeadView, epoch: int = 0) -> wire.LeadState:
    """The lead as a LeadChange carries it (and the API shows it, as `lead_json`)."""
    s = view.summary
    return wire.LeadState(
        project_id=s.project_id,
        lead_id=s.lead_id,
        aliases=tuple(s.aliases),
        email=s.email,
        name=s.name,
        company=s.company,
        current_score=view.current_score,
        lead_stage=view.lead_stage,
        velocity_score=view.velocity_score,
        events_last_24h=view.events_last_24h,
        event_count=s.event_count,
        first_event_at=None if s.first_timestamp is None else format_timestamp(s.first_timestamp),
        last_event_at=None if s.last_timestamp is None else format_timestamp(s.last_timestamp),
        score_at_last_event=s.score,
        email_claim=s.email_claim,
        version=materialized_version(epoch, s.version),
        computed_at=format_timestamp(view.computed_at),
    )


def lead_json(view: LeadView, epoch: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(lead_state(view, epoch))
    return out


ChangeKind = Literal["upsert", "refresh"]

OutgoingChange = tuple[int, bytes, bytes]
"""A LeadChange a scoring batch will send: (lead-changes partition, lead key, record).

Every LeadChange a batch makes — scored events, merges, absorbs, promotes, rebuilds,
erasures — goes into one list, sent in the order it was made: a lead's removal or erasure
must reach the sink after the rows its events made earlier in the same batch, or the sink
would write those rows back under a merged or erased key."""


# A merged lead never lives again within an epoch, so its tombstone takes the epoch's highest
# version. Its own counter will not do: a worker killed after a LeadChange reached Kafka but
# before the table write that made it did leaves a document at version n, and the redo that
# merges the lead from the state before it reuses n (ADR 0005).
TOMBSTONE_LEAD_VERSION = (1 << VERSION_EPOCH_BITS) - 1


def lead_removal(project_id: str, lead_id: str, merged_into: str, now: int, *, epoch: int) -> bytes:
    """The LeadChange of a lead merged into another: its document becomes a tombstone that
    outranks every document of the lead in this epoch."""
    return wire.encode(
        wire.RemoveChange(
            lead=wire.RemovedLead(
                project_id=project_id,
                lead_id=lead_id,
                version=materialized_version(epoch, TOMBSTONE_LEAD_VERSION),
                merged_into=merged_into,  # informational; the tombstone says merged: true
                computed_at=format_timestamp(now),
            )
        )
    )


def lead_erasure(project_id: str, lead_id: str, *, epoch: int) -> bytes:
    """The LeadChange of an erased lead key (ADR 0020): the sink deletes its documents."""
    return wire.encode(
        wire.EraseChange(
            lead=wire.ErasedLead(
                project_id=project_id,
                lead_id=lead_id,
                version=materialized_version(epoch, 0),
            )
        )
    )


_CHANGES: dict[str, type[wire.UpsertChange] | type[wire.RefreshChange]] = {
    "upsert": wire.UpsertChange,
    "refresh": wire.RefreshChange,
}


def lead_change(
    kind: ChangeKind, view: LeadView, rows: Iterable[HistoryRow] = (), *, epoch: int = 0
) -> bytes:
    """A LeadChange: the lead as of its `version`, plus the history rows that changed."""
    history = tuple(history_row_record(r) for r in rows)
    return wire.encode(_CHANGES[kind](lead=lead_state(view, epoch), history=history))


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
    head = wire.encode(_CHANGES[kind](lead=lead_state(view, epoch)))
    encoded = [wire.encode(history_row_record(r)) for r in rows]
    if not encoded:
        return [head]
    base = head[:-2]  # up to `"history":[` (the last field), closed again below
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
