"""Validation of incoming events (SPEC 2, 12): errors are data that name each offending field.

One function, `validate_event`, serves every entry (the HTTP routes and the events topic), so
what the API accepts and what the scoring agent accepts cannot drift apart; what it accepts is
storable (`core.storable`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.storable import FieldError, check_text, check_timestamp_range, check_value
from core.timeutil import US_PER_SECOND, format_timestamp, parse_timestamp

__all__ = [
    "EVENT_TYPE_PATTERN",
    "EVENT_TYPE_RE",
    "MAX_FUTURE_US",
    "MAX_PROPERTIES_BYTES",
    "MAX_TIMESTAMP_CHARS",
    "Event",
    "EventInput",
    "FieldError",
    "InvalidEvent",
    "idempotent_event_id",
    "validate_event",
]

MAX_PROPERTIES_BYTES = 16 * 1024
MAX_TIMESTAMP_CHARS = 64
MAX_FUTURE_US = 5 * 60 * US_PER_SECOND
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)


class InvalidEvent(ValueError):
    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = list(errors)


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event, normalized: timestamps in microseconds, `event` folded into `event_type`."""

    project_id: str
    event_id: str
    event_type: str
    timestamp: int
    lead_id: str | None = None
    anonymous_id: str | None = None
    properties: Mapping[str, Any] | None = None

    @property
    def lead_key(self) -> str:
        return self.lead_id if self.lead_id is not None else self.anonymous_id or ""

    @property
    def table_key(self) -> str:
        return f"{self.project_id}:{self.lead_key}"

    def to_wire(self) -> bytes:
        """The value on the events topic (SPEC 2 wire format)."""
        body: dict[str, Any] = {
            "projectId": self.project_id,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "timestamp": format_timestamp(self.timestamp),
        }
        if self.lead_id is not None:
            body["leadId"] = self.lead_id
        if self.anonymous_id is not None:
            body["anonymousId"] = self.anonymous_id
        if self.properties:
            body["properties"] = self.properties
        return orjson.dumps(body)


class EventInput(BaseModel):
    """The JSON shape accepted by the API and on the topic; checks that need context come later."""

    # strict: no lax coercion (a number is never a string, "1" never a number)
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, strict=True)

    eventId: str | None = Field(default=None, min_length=1, max_length=128)
    eventType: str = Field(validation_alias=AliasChoices("eventType", "event"))
    leadId: str | None = Field(default=None, min_length=1, max_length=128)
    anonymousId: str | None = Field(default=None, min_length=1, max_length=128)
    timestamp: str | None = Field(default=None, max_length=MAX_TIMESTAMP_CHARS)
    properties: dict[str, Any] | None = None
    projectId: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("eventId", "leadId", "anonymousId", "projectId")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        if value is not None and check_text(value, "") is not None:
            raise ValueError("must be valid UTF-8 (no lone surrogates)")
        return value

    @field_validator("eventType")
    @classmethod
    def _event_type_pattern(cls, value: str) -> str:
        if not EVENT_TYPE_RE.match(value):
            raise ValueError(f"must match {EVENT_TYPE_PATTERN}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _timestamp_has_offset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            us = parse_timestamp(value)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"must be ISO-8601 with a UTC offset ({exc})") from None
        out_of_range = check_timestamp_range(us, "timestamp")
        if out_of_range is not None:
            raise ValueError(out_of_range.message)
        return value


_IDEMPOTENCY_NAMESPACE = uuid.UUID("5d1c7f0e-58a4-4c43-9a55-6b3c0d1e2f10")


def idempotent_event_id(project_id: str, idempotency_key: str, index: int | None = None) -> str:
    """The eventId of an event sent without one under an `Idempotency-Key` (issue 10 finding 8).

    A name-based UUID (v5) of project, key and (in a batch) the event's index: a retry with the
    same key gets the same eventId on any process, after any restart, with no shared store —
    and the lead's own deduplication (SPEC 3) then counts the event once.
    """
    # a JSON array, not a joined string: no two (project, key, index) share a name
    name = orjson.dumps([project_id, idempotency_key, index]).decode()
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, name))


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        name = loc[0] if loc else "body"
        if name == "event":  # alias reported under its canonical name
            name = "eventType"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
        errors.append(FieldError(name, message))
    return errors


def validate_event(
    data: Any,
    *,
    now: int,
    project_id: str | None = None,
    default_timestamp: int | None = None,
    require_event_id: bool = False,
    new_event_id: str | None = None,
) -> Event:
    """Check one event against SPEC 2 and normalize it; raise `InvalidEvent` naming the fields.

    `project_id` comes from the API key on the HTTP API (the body's is ignored); on the topic it is
    None and the body must carry one. `default_timestamp` is the receive time (HTTP) or the Kafka
    record timestamp (topic).
    """
    if not isinstance(data, dict):
        raise InvalidEvent([FieldError("body", "must be a JSON object")])
    errors: list[FieldError] = []
    if data.get("leadId") is None and data.get("anonymousId") is None:
        errors.append(FieldError("leadId", "leadId or anonymousId is required"))
    try:
        parsed = EventInput.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(errors + _pydantic_errors(exc)) from None
    event_id = parsed.eventId
    if event_id is None:
        if require_event_id or new_event_id is None:
            errors.append(FieldError("eventId", "is required"))
        event_id = new_event_id
    pid = project_id if project_id is not None else parsed.projectId
    if pid is None:
        errors.append(FieldError("projectId", "is required"))
    timestamp = parse_timestamp(parsed.timestamp) if parsed.timestamp else default_timestamp
    if timestamp is None:
        errors.append(FieldError("timestamp", "is required"))
    elif timestamp - now > MAX_FUTURE_US:
        errors.append(FieldError("timestamp", "is more than 5 minutes in the future"))
    elif (range_error := check_timestamp_range(timestamp, "timestamp")) is not None:
        errors.append(range_error)  # a Kafka record timestamp standing in for an absent one
    if parsed.properties is not None:
        unstorable = check_value(parsed.properties, "properties")
        errors += unstorable
        if not unstorable and len(orjson.dumps(parsed.properties)) > MAX_PROPERTIES_BYTES:
            errors.append(FieldError("properties", "must be at most 16 KiB serialized"))
    if errors:
        raise InvalidEvent(errors)
    assert pid is not None and event_id is not None and timestamp is not None
    return Event(
        project_id=pid,
        event_id=event_id,
        event_type=parsed.eventType,
        timestamp=timestamp,
        lead_id=parsed.leadId,
        anonymous_id=parsed.anonymousId,
        properties=parsed.properties,
    )
