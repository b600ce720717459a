"""The events topic's common case, validated without a pydantic model (the scoring hot path).

`core.events.validate_event` is the reference and names every error. Almost every record on the
topic is a plain event: string ids, an ISO timestamp, flat properties of strings, numbers and
booleans. `fast_event` accepts exactly those, checking the same rules in plain Python, and
returns None for anything else — a nested property, a missing field, any error — so the caller
falls back to `validate_event`, which decides (and explains a refusal). The property test
`tests/unit/test_fast_decode.py` holds the two equal: whatever `fast_event` accepts,
`validate_event` accepts with the same result.
"""

from __future__ import annotations

import math
from typing import Any, cast

import orjson

from core.events import (
    EVENT_TYPE_RE,
    MAX_FUTURE_US,
    MAX_PROPERTIES_BYTES,
    MAX_TIMESTAMP_CHARS,
    Event,
)
from core.storable import INT64_MAX, INT64_MIN, MAX_TIMESTAMP_US, MIN_TIMESTAMP_US, is_utf8
from core.timeutil import parse_timestamp

__all__ = ["fast_event"]

_MAX_ID = 128


def _id(value: Any) -> bool:
    """A string id of 1-128 characters that UTF-8 can encode."""
    return type(value) is str and 0 < len(value) <= _MAX_ID and (value.isascii() or is_utf8(value))


def _flat_properties(properties: dict[Any, Any]) -> bool:
    for key, value in properties.items():
        if (
            type(key) is not str
            or not key
            or key[0] == "$"
            or "\x00" in key
            or not (key.isascii() or is_utf8(key))
        ):
            return False
        kind = type(value)
        if kind is str:
            if not (value.isascii() or is_utf8(value)):
                return False
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif value is not None and kind is not bool:
            return False  # nested, or not JSON: the reference decides
    return True


def fast_event(data: Any, *, now: int, default_timestamp: int) -> Event | None:
    """The event `validate_event(data, now=now, default_timestamp=default_timestamp,
    require_event_id=True)` returns, when `data` is a plain event; None otherwise."""
    if type(data) is not dict:
        return None
    event_type = data["eventType"] if "eventType" in data else data.get("event")
    if type(event_type) is not str or not EVENT_TYPE_RE.match(event_type):
        return None
    event_id = data.get("eventId")
    project_id = data.get("projectId")
    if not _id(event_id) or not _id(project_id):
        return None
    lead_id = data.get("leadId")
    anonymous_id = data.get("anonymousId")
    if lead_id is None and anonymous_id is None:
        return None
    if (lead_id is not None and not _id(lead_id)) or (
        anonymous_id is not None and not _id(anonymous_id)
    ):
        return None
    text = data.get("timestamp")
    if text is None:
        timestamp = default_timestamp
    elif type(text) is str and 0 < len(text) <= MAX_TIMESTAMP_CHARS:
        try:
            timestamp = parse_timestamp(text)
        except (ValueError, OverflowError):
            return None
    else:
        return None
    if not MIN_TIMESTAMP_US <= timestamp <= MAX_TIMESTAMP_US or timestamp - now > MAX_FUTURE_US:
        return None
    properties = data.get("properties")
    if properties is not None:
        if type(properties) is not dict or not _flat_properties(properties):
            return None
        if len(orjson.dumps(properties)) > MAX_PROPERTIES_BYTES:
            return None
    return Event(
        project_id=cast(str, project_id),
        event_id=cast(str, event_id),
        event_type=event_type,
        timestamp=timestamp,
        lead_id=lead_id,
        anonymous_id=anonymous_id,
        properties=properties,
    )
