"""The hot path's decoder (`app.fast_decode.fast_event`) agrees with `validate_event`.

Whatever `fast_event` accepts, the reference accepts with the same `Event`; whatever the
reference refuses, `fast_event` refuses (returns None, so the reference decides and explains).
It may pass on valid events it does not handle (nested properties): those take the slow path.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.fast_decode import fast_event
from core.events import InvalidEvent, validate_event
from core.timeutil import parse_timestamp

NOW = parse_timestamp("2026-11-30T12:00:00Z")
LOGGED = NOW - 5_000_000

texts = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "a", "x" * 128, "x" * 129, "\ud800", "$x", "a\x00b", "é"]),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-30T11:00:00Z",
            "2026-11-30T11:00:00.123456+02:00",
            "2026-11-30T12:04:59Z",
            "2026-11-30T12:06:00Z",  # > 5 minutes in the future
            "2026-11-30T11:00:00",  # no offset
            "1969-12-31T23:59:59Z",
            "not a time",
            "",
            "2026-11-30T11:00:00Z" + " " * 60,
        ]
    ),
    st.integers(),
    st.none(),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
properties = st.one_of(
    st.none(),
    st.dictionaries(texts, scalars, max_size=4),
    st.dictionaries(texts, st.lists(scalars, max_size=2), max_size=2),  # nested: slow path
    st.dictionaries(st.sampled_from(["big"]), st.just("x" * 17_000), max_size=1),
    scalars,
)
fields = {
    "projectId": st.one_of(st.just("prj_1"), texts, st.integers(), st.none()),
    "eventId": st.one_of(st.just("ev-1"), texts, st.integers(), st.none()),
    "eventType": st.one_of(
        st.sampled_from(["page_view", "demo_request", "bad type", "x" * 65]), st.none(), texts
    ),
    "event": st.sampled_from(["signup", "bad type"]),
    "leadId": st.one_of(st.just("lead-1"), texts, st.integers(), st.none()),
    "anonymousId": st.one_of(st.just("anon-1"), texts, st.none()),
    "timestamp": timestamps,
    "properties": properties,
    "extra": scalars,
}


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(scalars, st.lists(scalars, max_size=2)))
    names = draw(st.sets(st.sampled_from(sorted(fields)), max_size=len(fields)))
    must = {"projectId", "eventId", "eventType", "leadId"}  # mostly valid-looking events
    if draw(st.booleans()):
        names |= must
    return {name: draw(fields[name]) for name in names}


@settings(max_examples=3_000, deadline=None)
@given(body=bodies())
def test_the_fast_decoder_accepts_only_what_the_reference_accepts_and_alike(body: Any) -> None:
    fast = fast_event(body, now=NOW, default_timestamp=LOGGED)
    try:
        reference = validate_event(body, now=NOW, default_timestamp=LOGGED, require_event_id=True)
    except InvalidEvent:
        assert fast is None
        return
    if fast is not None:
        assert fast == reference


def test_a_plain_event_takes_the_fast_path() -> None:
    body = {
        "projectId": "prj_1",
        "eventId": "ev-1",
        "eventType": "page_view",
        "leadId": "lead-1",
        "timestamp": "2026-11-30T11:00:00Z",
        "properties": {"path": "/pricing", "n": 3, "ok": True, "x": 1.5, "none": None},
    }
    fast = fast_event(body, now=NOW, default_timestamp=LOGGED)
    assert fast is not None
    assert fast == validate_event(body, now=NOW, default_timestamp=LOGGED, require_event_id=True)
