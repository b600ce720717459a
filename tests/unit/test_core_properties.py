"""Invariants of SPEC 3 and 4, checked on random event sets through `MemoryLead`.

The score is a pure function of the set of distinct events: any arrival order and any duplication
must give bit-for-bit the result of `score_events` on the set, and the timeline must satisfy the
chain formula at every moment, not only at the end.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import DEFAULT_RULES, Rule, ScoringConfig, StageThresholds
from core.lead import EventFact, LeadSummary, NewEvent, score_events, summary_from_facts
from core.scoring import decay, report, stage_for
from core.timeutil import US_PER_DAY, US_PER_HOUR, parse_timestamp
from tests.unit.core_support import MemoryLead, chain_fields

BASE = parse_timestamp("2026-01-01T00:00:00Z")
SPAN_DAYS = 60
STAGES = ["cold", "warm", "hot", "qualified"]

RULES = dict(DEFAULT_RULES) | {"paused_rule": Rule(40, active=False)}
TYPES = [*RULES, "feature_used", "identify"]  # incl. negative, inactive and unknown types

PROPERTY = settings(max_examples=200, deadline=None)

configs = st.builds(
    ScoringConfig,
    rules=st.just(RULES),
    grace_days=st.sampled_from([7, 7, 0, 3]),
    daily_rate=st.sampled_from([0.05, 0.05, 0.3, 1.0]),
)

timestamps = st.one_of(
    # Whole hours over the range: equal timestamps and exact day multiples are common.
    st.integers(0, SPAN_DAYS * 24).map(lambda h: BASE + h * US_PER_HOUR),
    # Anywhere, to the microsecond.
    st.integers(0, SPAN_DAYS * US_PER_DAY).map(lambda us: BASE + us),
    # Right at and around the grace boundary from the start.
    st.sampled_from([7, 8]).flatmap(
        lambda d: st.sampled_from([BASE + d * US_PER_DAY - 1, BASE + d * US_PER_DAY])
    ),
)

event_ids = st.text(alphabet="abcdefghij", min_size=1, max_size=3)


@st.composite
def raw_events(draw: st.DrawFn) -> tuple[str, str, int]:
    return draw(event_ids), draw(st.sampled_from(TYPES)), draw(timestamps)


def to_new(raw: tuple[str, str, int], config: ScoringConfig) -> NewEvent:
    event_id, event_type, ts = raw
    return NewEvent(ts, event_id, event_type, config.points_for(event_type))


event_sets = st.lists(raw_events(), max_size=25, unique_by=lambda e: e[0])


def feed(log: list[NewEvent], config: ScoringConfig) -> MemoryLead:
    lead = MemoryLead(config=config)
    for event in log:
        version, known = lead.summary.version, event.event_id in lead.seen
        applied = lead.add(event)
        # Version moves exactly once per distinct event and never for a duplicate.
        assert (applied is None) == known
        assert lead.summary.version == version + (0 if known else 1)
    return lead


def reference_summary(facts: list[EventFact]) -> tuple[str, int, int | None, int | None, str]:
    if not facts:
        return (0.0).hex(), 0, None, None, ""
    return (
        facts[-1].score_after.hex(),
        len(facts),
        min(f.timestamp for f in facts),
        facts[-1].timestamp,
        facts[-1].event_id,
    )


def summary_key(s: LeadSummary) -> tuple[str, int, int | None, int | None, str]:
    return s.score.hex(), s.event_count, s.first_timestamp, s.last_timestamp, s.last_event_id


def assert_chain(lead: MemoryLead) -> None:
    """SPEC 4 at this moment: one row per eventId, sorted, every link follows the formula."""
    rows = lead.rows()
    config = lead.config
    assert len(rows) == len(lead.seen) == lead.summary.event_count == len(lead.facts)
    assert len({row.event_id for row in rows}) == len(rows)
    assert [(r.timestamp, r.event_id) for r in rows] == sorted(
        (r.timestamp, r.event_id) for r in rows
    )
    for i, row in enumerate(rows):
        if i == 0:
            assert row.score_before == 0.0
        else:
            prev = rows[i - 1]
            expected = decay(
                prev.score_after,
                row.timestamp - prev.timestamp,
                config.grace_days,
                config.daily_rate,
            )
            assert row.score_before.hex() == expected.hex()
        assert row.score_after.hex() == max(0.0, row.score_before + row.points).hex()
        assert row.score_before >= 0.0
        assert row.score_after >= 0.0
        assert row.points == config.points_for(row.event_type)
    if rows:
        assert rows[-1].score_after.hex() == lead.summary.score.hex()
    assert [f.order for f in lead.facts] == [(r.timestamp, r.event_id) for r in rows]
    assert [f.score_after for f in lead.facts] == [r.score_after for r in rows]


@PROPERTY
@given(configs, event_sets, st.data())
def test_property_any_permutation_and_duplication_gives_the_reference_result(
    config: ScoringConfig, raws: list[tuple[str, str, int]], data: st.DataObject
) -> None:
    events = [to_new(raw, config) for raw in raws]
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    log = data.draw(st.permutations(events + duplicates))
    lead = feed(log, config)

    facts, rows = score_events(events, config)
    assert summary_key(lead.summary) == reference_summary(facts)
    assert lead.summary.version == len(events)
    assert [chain_fields(r) for r in lead.rows()] == [chain_fields(r) for r in rows]
    assert lead.facts == facts
    rebuilt = summary_from_facts(LeadSummary("prj_test", "lead"), facts)
    assert summary_key(rebuilt) == summary_key(lead.summary)


@PROPERTY
@given(configs, event_sets, st.data())
def test_property_history_satisfies_the_chain_at_every_moment(
    config: ScoringConfig, raws: list[tuple[str, str, int]], data: st.DataObject
) -> None:
    events = [to_new(raw, config) for raw in raws]
    log = data.draw(st.permutations(events))
    lead = MemoryLead(config=config)
    for event in log:
        lead.add(event)
        assert_chain(lead)
        # Every prefix of the log is itself a set: the state equals scoring it from scratch.
        _, rows = score_events(lead.seen.values(), config)
        assert [chain_fields(r) for r in lead.rows()] == [chain_fields(r) for r in rows]


@PROPERTY
@given(configs, st.lists(raw_events(), max_size=30), st.lists(raw_events(), max_size=10))
def test_property_first_occurrence_of_an_event_id_wins(
    config: ScoringConfig,
    raws: list[tuple[str, str, int]],
    impostors: list[tuple[str, str, int]],
) -> None:
    # The log may reuse an eventId with another type or timestamp; a reused id later is ignored.
    log = [to_new(raw, config) for raw in raws]
    if log:
        # Force some collisions with ids already in the log.
        log += [
            to_new((log[i % len(log)].event_id, t, ts), config)
            for i, (_, t, ts) in enumerate(impostors)
        ]
    firsts: dict[str, NewEvent] = {}
    for event in log:
        firsts.setdefault(event.event_id, event)

    lead = feed(log, config)
    assert lead.seen == firsts
    for row in lead.rows():
        first = firsts[row.event_id]
        assert (row.event_type, row.timestamp, row.points) == (
            first.event_type,
            first.timestamp,
            first.points,
        )
    facts, rows = score_events(list(firsts.values()), config)
    assert [chain_fields(r) for r in lead.rows()] == [chain_fields(r) for r in rows]
    assert summary_key(lead.summary) == reference_summary(facts)
    assert_chain(lead)


@PROPERTY
@given(
    configs,
    event_sets.filter(bool),
    st.lists(st.integers(0, 400 * US_PER_DAY), min_size=2, max_size=6),
)
def test_property_current_score_never_negative_and_never_rises_without_events(
    config: ScoringConfig, raws: list[tuple[str, str, int]], offsets: list[int]
) -> None:
    lead = feed([to_new(raw, config) for raw in raws], config)
    last = lead.summary.last_timestamp
    assert last is not None
    previous_score, previous_stage = math.inf, len(STAGES)
    for offset in sorted(offsets):
        view = lead.view(last + offset)
        assert 0.0 <= view.current_score <= report(lead.summary.score)
        assert math.isfinite(view.current_score)
        assert view.current_score <= previous_score
        stage = STAGES.index(view.lead_stage)
        assert stage <= previous_stage
        assert view.lead_stage == stage_for(view.current_score, config.thresholds)
        assert 0 <= view.velocity_score == min(10, view.events_last_24h)
        previous_score, previous_stage = view.current_score, stage


@PROPERTY
@given(
    st.floats(min_value=0.0, max_value=1e6),
    st.integers(0, 1_000 * US_PER_DAY),
    st.integers(0, 1_000 * US_PER_DAY),
    st.integers(0, 30),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_property_decay_is_identity_within_grace_then_monotone_non_negative_and_finite(
    score: float, gap_a: int, gap_b: int, grace: int, rate: float
) -> None:
    short, long = sorted((gap_a, gap_b))
    decayed_short = decay(score, short, grace, rate)
    decayed_long = decay(score, long, grace, rate)
    assert 0.0 <= decayed_long <= decayed_short <= score
    assert math.isfinite(decayed_long)
    if short // US_PER_DAY <= grace:
        assert decayed_short == score
    # Only whole days count: any gap within the same day decays the same.
    day_start = (long // US_PER_DAY) * US_PER_DAY
    assert decay(score, day_start, grace, rate) == decayed_long


@PROPERTY
@given(st.floats(min_value=0.0, max_value=1e6))
def test_property_stage_is_the_threshold_band_of_the_reported_score(score: float) -> None:
    shown = report(score)
    expected = (
        "qualified" if shown >= 100 else "hot" if shown >= 60 else "warm" if shown >= 30 else "cold"
    )
    assert stage_for(score, StageThresholds()) == expected
