"""SPEC 2 timestamps: ISO-8601 with an offset, held as integer microseconds since the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.timeutil import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_SECOND,
    format_timestamp,
    from_datetime,
    parse_timestamp,
    to_datetime,
)

GOLDEN_NOW = 1_772_366_400 * US_PER_SECOND  # 2026-03-01T12:00:00Z


def test_timestamp_units_are_microseconds() -> None:
    assert (US_PER_SECOND, US_PER_HOUR, US_PER_DAY) == (10**6, 3_600 * 10**6, 86_400 * 10**6)


def test_timestamp_parses_z_suffix() -> None:
    assert parse_timestamp("2026-03-01T12:00:00Z") == GOLDEN_NOW
    assert parse_timestamp("1970-01-01T00:00:00Z") == 0


def test_timestamp_parses_positive_and_negative_offsets_to_the_same_instant() -> None:
    assert parse_timestamp("2026-03-01T14:00:00+02:00") == GOLDEN_NOW
    assert parse_timestamp("2026-03-01T07:00:00-05:00") == GOLDEN_NOW
    assert parse_timestamp("2026-03-01T12:00:00+00:00") == GOLDEN_NOW
    # Crossing midnight backwards into the previous day.
    assert parse_timestamp("2026-03-02T01:30:00+13:30") == GOLDEN_NOW


def test_timestamp_parses_fractional_seconds() -> None:
    assert parse_timestamp("2026-03-01T12:00:00.5Z") == GOLDEN_NOW + 500_000
    assert parse_timestamp("2026-03-01T12:00:00.123Z") == GOLDEN_NOW + 123_000
    assert parse_timestamp("2026-03-01T12:00:00.000001Z") == GOLDEN_NOW + 1
    assert parse_timestamp("2026-03-01T14:00:00.250000+02:00") == GOLDEN_NOW + 250_000


@pytest.mark.parametrize(
    "text",
    ["2026-03-01T12:00:00", "2026-03-01T12:00:00.5", "2026-03-01"],
)
def test_timestamp_without_offset_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_timestamp(text)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-03-01T25:00:00Z"])
def test_timestamp_that_is_not_iso_8601_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_timestamp_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="offset"):
        from_datetime(datetime(2026, 3, 1, 12))


def test_timestamp_formats_in_utc_with_z_and_microseconds_only_when_present() -> None:
    assert format_timestamp(GOLDEN_NOW) == "2026-03-01T12:00:00Z"
    assert format_timestamp(GOLDEN_NOW + 500_000) == "2026-03-01T12:00:00.500000Z"
    assert format_timestamp(GOLDEN_NOW + 1) == "2026-03-01T12:00:00.000001Z"
    assert format_timestamp(parse_timestamp("2026-03-01T14:00:00+02:00")) == "2026-03-01T12:00:00Z"


def test_timestamp_before_the_epoch_is_exact() -> None:
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999999Z"
    assert parse_timestamp("1969-12-31T23:59:59.999999Z") == -1


def test_timestamp_from_datetime_and_to_datetime_are_inverse() -> None:
    dt = datetime(2026, 3, 1, 14, 0, 0, 7, tzinfo=timezone(timedelta(hours=2)))
    assert from_datetime(dt) == GOLDEN_NOW + 7
    assert to_datetime(GOLDEN_NOW + 7) == dt
    assert to_datetime(GOLDEN_NOW).tzinfo == UTC


_INSTANTS = st.integers(
    min_value=parse_timestamp("1000-01-01T00:00:00Z"),
    max_value=parse_timestamp("9999-12-31T23:59:59.999999Z"),
)


@settings(max_examples=200, deadline=None)
@given(_INSTANTS)
def test_timestamp_format_round_trips(us: int) -> None:
    text = format_timestamp(us)
    assert text.endswith("Z")
    assert parse_timestamp(text) == us


@settings(max_examples=200, deadline=None)
@given(
    st.integers(
        min_value=parse_timestamp("1001-01-01T00:00:00Z"),
        max_value=parse_timestamp("9998-12-31T00:00:00Z"),
    ),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_timestamp_offset_does_not_change_the_instant(us: int, offset_minutes: int) -> None:
    tz = timezone(timedelta(minutes=offset_minutes))
    local = to_datetime(us).astimezone(tz)
    assert parse_timestamp(local.isoformat()) == us


@settings(max_examples=500, deadline=None)
@given(_INSTANTS | st.integers(min_value=-(10**12), max_value=10**12))  # and around the epoch
def test_timestamp_format_equals_isoformat(us: int) -> None:
    """The cached per-second text plus microseconds is `isoformat`'s text, to the character."""
    reference = (datetime(1970, 1, 1) + timedelta(microseconds=us)).isoformat() + "Z"
    assert format_timestamp(us) == reference


def test_timestamp_format_round_trips_for_years_below_1000() -> None:
    us = parse_timestamp("0999-01-01T00:00:00Z")
    assert format_timestamp(us) == "0999-01-01T00:00:00Z"
