"""Typed records on leadscore's own topics: one encoder and one decoder per topic (ADR 0022).

- lead-commands: a closed set of `LeadCommand`s, told apart by their `command` field;
- identity-claims: `Claim`, `Confirm` (`"confirm": true`) and `Release` (`"release": true`);
- lead-changes: `LeadChange`s, told apart by their `kind` field.

The records are msgspec Structs: decoding goes straight from bytes to a checked, frozen record
(no intermediate dict, no pydantic model), and a record that is not one raises `WireError`
naming the field (`Expected int, got str - at $.timestamp`), which the consumer dead-letters.
Unknown fields are ignored, so a newer writer may add one without stopping older readers.

Versions: commands and claims carry the epoch (the app version: a record of another epoch is
ignored, and one of another epoch that does not decode is ignored too, never dead-lettered) and
`v`, the schema version of the record (absent on records written before it existed: 1); a
LeadChange carries `schema`. A record of a newer schema than this code knows is refused with
that reason rather than misread.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

__all__ = [
    "SCHEMA_VERSION",
    "Absorb",
    "AbsorbedEventRecord",
    "Claim",
    "ClaimRecord",
    "Confirm",
    "Erase",
    "EraseChange",
    "ErasedLead",
    "EventCommand",
    "HistoryRowRecord",
    "LeadChange",
    "LeadCommand",
    "LeadState",
    "Merge",
    "Promote",
    "Rebuild",
    "RefreshChange",
    "Release",
    "RemoveChange",
    "RemovedLead",
    "RescoreProject",
    "UpsertChange",
    "WireError",
    "decode_claim",
    "decode_command",
    "decode_lead_change",
    "encode",
]

SCHEMA_VERSION = 1
"""The schema version of commands and claims (`v`) and of LeadChanges (`schema`)."""


class WireError(ValueError):
    """A record that is not what its topic carries; the message names the field."""


def _check_version(v: int, name: str = "v") -> None:
    if v > SCHEMA_VERSION:
        raise ValueError(
            f"schema version {v} is newer than this process knows ({SCHEMA_VERSION})"
            f" - at `$.{name}`"
        )


class _Record(Struct, frozen=True, kw_only=True, rename="camel"):
    """Fields in snake_case here, camelCase on the wire (as everywhere in leadscore's JSON)."""


# -- lead-commands ---------------------------------------------------------------------------------
class _Command(_Record, tag_field="command", frozen=True, kw_only=True):
    epoch: int = 0  # 0: not stamped yet (agents.outbox stamps what it sends)
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_version(self.v)


class EventCommand(_Command, tag="event", frozen=True, kw_only=True):
    """An event handed to the partition owning its lead (misrouted, or sent to an alias), with
    the time its record entered the log (identity ranks claims by it)."""

    event: Raw  # the event's own wire bytes, validated by `core.events` as any event is
    logged_at: int | None = None


class Promote(_Command, tag="promote", frozen=True, kw_only=True):
    """Identity's reply to a claimant: it owns `email` (if this answers its pending claim)."""

    project_id: str
    email: str
    event_id: str
    timestamp: int
    name: Any = None
    company: Any = None

    @property
    def claim(self) -> tuple[int, str]:
        return (self.timestamp, self.event_id)


class Merge(_Command, tag="merge", frozen=True, kw_only=True):
    """Merge the lead into `into`; `timestamp`/`eventId` name the identify it stems from, and
    `email` is None when it is merged as an anonymousId of a merged lead."""

    project_id: str
    into: str
    email: str | None = None
    timestamp: int | None = None
    event_id: str | None = None
    name: Any = None
    company: Any = None

    @property
    def cause(self) -> tuple[int, str] | None:
        if self.timestamp is None or self.event_id is None:
            return None
        return (self.timestamp, self.event_id)


class AbsorbedEventRecord(Struct, frozen=True, array_like=True):
    """[timestamp, eventId, eventType, points, properties] of an event of an absorbed lead."""

    timestamp: int
    event_id: str
    event_type: str
    points: int
    properties: Any = None


class Absorb(_Command, tag="absorb", frozen=True, kw_only=True):
    """A chunk of an absorbed lead's events; the last chunk also carries its identity."""

    project_id: str
    from_: str = field(name="from")
    events: tuple[AbsorbedEventRecord, ...] = ()
    aliases: tuple[str, ...] | UnsetType = UNSET  # set on the last chunk only
    name: Any = None
    company: Any = None


class Rebuild(_Command, tag="rebuild", frozen=True, kw_only=True):
    project_id: str
    rescore: bool = False


class RescoreProject(_Command, tag="rescore-project", frozen=True, kw_only=True):
    project_id: str


class Erase(_Command, tag="erase", frozen=True, kw_only=True):
    project_id: str
    erased_at: int
    by: Any = None
    origin: Literal["request", "cascade"] = "request"


LeadCommand = EventCommand | Promote | Merge | Absorb | Rebuild | RescoreProject | Erase


# -- identity-claims -------------------------------------------------------------------------------
class _ClaimsRecord(_Record, frozen=True, kw_only=True):
    project_id: str
    email: str
    event_id: str
    epoch: int = 0  # 0: not stamped yet (agents.outbox stamps what it sends)
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_version(self.v)


class Claim(_ClaimsRecord, frozen=True, kw_only=True):
    """`claimant` claims `email` for its identify `eventId`, ranked by `timestamp` (when the
    identify's record entered the log)."""

    claimant: str
    timestamp: int
    name: Any = None
    company: Any = None


class Confirm(_ClaimsRecord, frozen=True, kw_only=True):
    """`lead` took the email its claim of `eventId` was given."""

    lead: str
    confirm: Literal[True] = True


class Release(_ClaimsRecord, frozen=True, kw_only=True):
    """`lead` gives back the email its claim of `eventId` was given (it cannot take it)."""

    lead: str
    release: Literal[True] = True


ClaimRecord = Claim | Confirm | Release


class _ClaimKind(Struct):
    confirm: bool = False
    release: bool = False


# -- lead-changes ----------------------------------------------------------------------------------
class LeadState(_Record, frozen=True, kw_only=True):
    """The lead document as of `version` (what the sink writes to MongoDB `leads`)."""

    project_id: str
    lead_id: str
    aliases: tuple[str, ...]
    email: str | None
    name: Any
    company: Any
    current_score: float
    lead_stage: str
    velocity_score: int
    events_last_24h: int = field(name="eventsLast24h")  # (not camel-cased "24H")
    event_count: int
    first_event_at: str | None
    last_event_at: str | None
    score_at_last_event: float
    email_claim: tuple[int, str] | None
    version: int
    computed_at: str


class RemovedLead(_Record, frozen=True, kw_only=True):
    project_id: str
    lead_id: str
    version: int
    merged_into: str
    computed_at: str


class ErasedLead(_Record, frozen=True, kw_only=True):
    project_id: str
    lead_id: str
    version: int


class HistoryRowRecord(_Record, frozen=True, kw_only=True):
    event_id: str
    event_type: str
    timestamp: str
    timestamp_us: int
    points: int
    score_before: float
    score_after: float
    properties: dict[str, Any] | UnsetType = UNSET  # only with the row's first version


class _Change(_Record, tag_field="kind", frozen=True, kw_only=True):
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_version(self.schema, "schema")


class UpsertChange(_Change, tag="upsert", frozen=True, kw_only=True):
    lead: LeadState
    history: tuple[HistoryRowRecord, ...] = ()


class RefreshChange(_Change, tag="refresh", frozen=True, kw_only=True):
    """Decayed figures of a lead with no new event (the sweep)."""

    lead: LeadState
    history: tuple[HistoryRowRecord, ...] = ()


class RemoveChange(_Change, tag="remove", frozen=True, kw_only=True):
    """The lead was merged into another: its document becomes a tombstone."""

    lead: RemovedLead
    history: tuple[HistoryRowRecord, ...] = ()


class EraseChange(_Change, tag="erase", frozen=True, kw_only=True):
    """The lead was erased (ADR 0020): its documents go."""

    lead: ErasedLead
    history: tuple[HistoryRowRecord, ...] = ()


LeadChange = UpsertChange | RefreshChange | RemoveChange | EraseChange


# -- the one encoder and the decoders --------------------------------------------------------------
_encoder = msgspec.json.Encoder()
_commands = msgspec.json.Decoder(LeadCommand)
_claim_kind = msgspec.json.Decoder(_ClaimKind)
_claims: dict[tuple[bool, bool], msgspec.json.Decoder[ClaimRecord]] = {
    (False, False): msgspec.json.Decoder(Claim),
    (True, False): msgspec.json.Decoder(Confirm),
    (False, True): msgspec.json.Decoder(Release),
}
_changes = msgspec.json.Decoder(LeadChange)


class _Epoch(Struct):
    epoch: Any = None


_epochs = msgspec.json.Decoder(_Epoch)


def encode(record: Struct) -> bytes:
    """The wire bytes of any record of this module."""
    return _encoder.encode(record)


_R = TypeVar("_R")


def _of_other_epoch(value: bytes, epoch: int) -> bool:
    """A record (even one that does not decode) stamped with an epoch other than `epoch`: a
    replay under a new epoch re-derives it, so it is ignored — never dead-lettered."""
    try:
        stamped = _epochs.decode(value).epoch
    except msgspec.DecodeError:
        return False
    return stamped != epoch


def _decode(
    decoder: msgspec.json.Decoder[_R], value: bytes | None, what: str, epoch: int
) -> _R | None:
    if value is None:
        raise WireError(f"{what}: no value (a tombstone)")
    try:
        record = decoder.decode(value)
    except msgspec.DecodeError as exc:
        if _of_other_epoch(value, epoch):
            return None
        raise WireError(f"{what}: {exc}") from None
    return None if record.epoch != epoch else record  # type: ignore[attr-defined]


def decode_command(value: bytes | None, epoch: int) -> LeadCommand | None:
    """The command of a lead-commands record; None when it belongs to another epoch."""
    return _decode(_commands, value, "invalid lead command", epoch)


def decode_claim(value: bytes | None, epoch: int) -> ClaimRecord | None:
    """The claim, confirm or release of an identity-claims record; None for another epoch."""
    try:
        kind = _claim_kind.decode(value) if value is not None else _ClaimKind()
    except msgspec.DecodeError as exc:
        if value is not None and _of_other_epoch(value, epoch):
            return None
        raise WireError(f"invalid identity record: {exc}") from None
    if kind.confirm and kind.release:
        raise WireError("invalid identity record: both confirm and release - at `$.release`")
    decoder = _claims[(kind.confirm, kind.release)]
    return _decode(decoder, value, "invalid identity record", epoch)


def decode_lead_change(value: bytes | None) -> LeadChange:
    """The LeadChange of a lead-changes record (every epoch's: the sink compares versions)."""
    if value is None:
        raise WireError("not a lead change: no value (a tombstone)")
    try:
        return _changes.decode(value)
    except msgspec.DecodeError as exc:
        raise WireError(f"not a lead change: {exc}") from None
