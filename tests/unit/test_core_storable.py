"""SPEC 12: whatever validation accepts is storable (survives JSON unchanged), and whatever is out
of range is refused with an error naming the field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import MAX_PROPERTIES_BYTES, InvalidEvent, validate_event
from core.storable import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_TIMESTAMP_US,
    check_value,
    depth_of,
)
from core.timeutil import US_PER_SECOND, format_timestamp, parse_timestamp

NOW = parse_timestamp("2026-03-01T12:00:00Z")

# Any JSON-ish value, hostile ones included: any int size, inf/nan, lone surrogates, odd keys.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=8)
)
keys = st.text(alphabet=st.characters(codec=None), max_size=6) | st.sampled_from(
    ["", "$set", "a\x00b", "a.b", "\ud800"]
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)


def event(**fields: Any) -> dict[str, Any]:
    return {"eventId": "e1", "eventType": "page_view", "leadId": "l1", **fields}


def refused_fields(data: Any, **kw: Any) -> set[str]:
    with pytest.raises(InvalidEvent) as info:
        validate_event(data, now=NOW, project_id="p", default_timestamp=NOW, **kw)
    return {e.field for e in info.value.errors}


def nested(depth: int) -> dict[str, Any]:
    """`properties` of exactly `depth` levels."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_every_accepted_value_survives_a_json_round_trip_unchanged(value: Any) -> None:
    if check_value(value, "v"):
        return
    assert orjson.loads(orjson.dumps(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=4))
def test_accepted_events_round_trip_through_the_wire_format(props: dict[str, Any]) -> None:
    try:
        accepted = validate_event(
            event(properties=props), now=NOW, project_id="p", default_timestamp=NOW
        )
    except InvalidEvent as exc:
        assert all(e.field.startswith("properties") for e in exc.errors), exc.errors
        return
    wire = orjson.loads(accepted.to_wire())
    again = validate_event(wire, now=NOW, default_timestamp=NOW, require_event_id=True)
    # the wire format leaves out empty properties: the one normalization allowed
    assert again == dataclasses.replace(accepted, properties=accepted.properties or None)
    assert (wire.get("properties") or {}) == props


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=INT64_MAX + 1) | st.integers(max_value=INT64_MIN - 1))
def test_integers_outside_signed_64_bits_are_refused_naming_the_field(value: int) -> None:
    assert refused_fields(event(properties={"n": [1, value]})) == {"properties.n[1]"}


@pytest.mark.parametrize("value", [INT64_MIN, INT64_MAX, 0, -1])
def test_integers_within_signed_64_bits_are_accepted(value: int) -> None:
    validate_event(event(properties={"n": value}), now=NOW, project_id="p", default_timestamp=NOW)


def test_finding_2_the_unsigned_64_bit_range_is_refused() -> None:
    for value in (2**63, 2**64 - 1):
        assert refused_fields(event(properties={"big": value})) == {"properties.big"}


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused(value: float) -> None:
    assert refused_fields(event(properties={"x": {"y": value}})) == {"properties.x.y"}


@pytest.mark.parametrize(
    ("key", "why"),
    [("a\x00b", "NUL"), ("", "empty"), ("$where", "'$'"), ("\udc80", "UTF-8")],
)
def test_bad_property_keys_are_refused(key: str, why: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(
            event(properties={"ok": {key: 1}}), now=NOW, project_id="p", default_timestamp=NOW
        )
    (error,) = info.value.errors
    assert error.field.startswith("properties.ok.") and why in error.message


def test_dotted_keys_are_accepted_they_round_trip_through_mongodb_as_literals() -> None:
    validate_event(
        event(properties={"utm.source": "x"}), now=NOW, project_id="p", default_timestamp=NOW
    )


@pytest.mark.parametrize("field", ["eventId", "leadId", "anonymousId"])
def test_lone_surrogates_are_refused_in_every_string_field(field: str) -> None:
    assert field in refused_fields(event(**{field: "a\ud800"}))


def test_lone_surrogates_are_refused_in_property_values() -> None:
    assert refused_fields(event(properties={"s": ["ok", "\udfff"]})) == {"properties.s[1]"}


def test_nesting_up_to_32_levels_is_accepted_deeper_is_refused() -> None:
    assert depth_of(nested(MAX_DEPTH)) == MAX_DEPTH
    validate_event(
        event(properties=nested(MAX_DEPTH)), now=NOW, project_id="p", default_timestamp=NOW
    )
    assert refused_fields(event(properties=nested(MAX_DEPTH + 1))) == {"properties"}
    assert refused_fields(event(properties=nested(5_000))) == {"properties"}  # no recursion error


def test_properties_over_16_kib_are_refused() -> None:
    big = {"s": "x" * MAX_PROPERTIES_BYTES}
    assert refused_fields(event(properties=big)) == {"properties"}


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # finding 3: UTC time before year 1
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-14:00",  # after 9999-12-31 in UTC
        "2026-03-01",  # no offset
        "2026-03-01T12:00:00",  # no offset
        "x" * 65,
        "2026-13-01T00:00:00Z",
    ],
)
def test_timestamps_outside_1970_to_9999_utc_or_malformed_are_refused(text: str) -> None:
    assert refused_fields(event(timestamp=text)) == {"timestamp"}


def test_timestamps_at_the_range_edges_are_accepted() -> None:
    first = validate_event(event(timestamp="1970-01-01T00:00:00Z"), now=NOW, project_id="p")
    assert first.timestamp == 0
    far = parse_timestamp("9999-12-31T23:59:59.999999Z")
    assert far == MAX_TIMESTAMP_US
    last = validate_event(event(timestamp=format_timestamp(far)), now=far, project_id="p")
    assert last.timestamp == far


def test_more_than_5_minutes_in_the_future_is_refused() -> None:
    soon = format_timestamp(NOW + 5 * 60 * US_PER_SECOND)
    validate_event(event(timestamp=soon), now=NOW, project_id="p")
    later = format_timestamp(NOW + 5 * 60 * US_PER_SECOND + 1)
    assert refused_fields(event(timestamp=later)) == {"timestamp"}


def test_a_kafka_record_timestamp_out_of_range_is_refused_too() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(event(), now=NOW, project_id="p", default_timestamp=-1)
    assert [e.field for e in info.value.errors] == ["timestamp"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventId", 123),
        ("leadId", 7),
        ("eventType", 1),
        ("timestamp", 1_772_366_400),
        ("properties", [1, 2]),
        ("properties", "{}"),
        ("anonymousId", True),
    ],
)
def test_types_are_strict_no_lax_coercion(field: str, value: Any) -> None:
    assert field in refused_fields(event(**{field: value}))


def test_errors_are_bounded_for_a_hostile_value() -> None:
    errors = check_value({str(i): math.inf for i in range(1_000)}, "properties")
    assert 0 < len(errors) <= 20
