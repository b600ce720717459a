"""Events as the client builds them (SPEC 2): checked here, so a caller's mistake is an exception
at the call, not an event lost later in a background thread."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["EVENT_TYPE_RE", "MAX_PROPERTIES_BYTES", "build_event", "encoded_size", "lead_key"]

EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_ID = 128
MAX_PROPERTIES_BYTES = 16 * 1024  # serialized compactly as UTF-8, as the server measures it


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON; ValueError if it is not JSON (or has NaN/inf)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"properties must be JSON with finite numbers: {exc}") from None
    return len(text.encode())


def _check_id(name: str, value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and 1 <= len(value) <= MAX_ID):
        raise ValueError(f"{name} must be a string of 1-{MAX_ID} characters")


def _timestamp(value: datetime | str | None) -> str:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, str):
        return value  # the server validates it and names the field if it is wrong
    if value.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return value.isoformat(timespec="microseconds")


def build_event(
    event_type: str,
    *,
    lead_id: str | None,
    anonymous_id: str | None,
    properties: Mapping[str, Any] | None,
    timestamp: datetime | str | None,
    event_id: str | None,
) -> dict[str, Any]:
    """The JSON event, with its eventId made here: every resend carries the same one, and the
    server ignores an eventId the lead already has, so a retry never counts twice."""
    if not isinstance(event_type, str) or not EVENT_TYPE_RE.match(event_type):
        raise ValueError(f"event_type must match {EVENT_TYPE_RE.pattern}")
    if lead_id is None and anonymous_id is None:
        raise ValueError("an event needs lead_id or anonymous_id")
    _check_id("lead_id", lead_id)
    _check_id("anonymous_id", anonymous_id)
    _check_id("event_id", event_id)
    if properties is not None and not isinstance(properties, Mapping):
        raise ValueError("properties must be a mapping")
    if properties and encoded_size(dict(properties)) > MAX_PROPERTIES_BYTES:
        raise ValueError("properties must be at most 16 KiB serialized")
    event: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "eventType": event_type,
        "timestamp": _timestamp(timestamp),
    }
    if lead_id is not None:
        event["leadId"] = lead_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    if properties:
        event["properties"] = dict(properties)
    return event


def lead_key(event: Mapping[str, Any]) -> str:
    """SPEC 1: the leadId if there is one, else the anonymousId."""
    return str(event.get("leadId") or event.get("anonymousId"))
