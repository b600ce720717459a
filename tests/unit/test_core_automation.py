"""SPEC 9 in the pure core: one test per trigger row and condition, the firing id, staleness,
and the delivery schedule (exponential, jittered, Retry-After, at least 8 attempts over at least
an hour by default) and the circuit breaker."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.settings import Settings
from core.automation import (
    STAGES,
    AutomationRule,
    Breaker,
    Cause,
    Conditions,
    LeadMoment,
    Trigger,
    backoff_delay,
    firing_id,
    firings_for,
    floor_before,
    moment_before,
    retryable_status,
    rule_fires,
)
from core.config import default_config
from core.lead import LeadSummary
from core.timeutil import US_PER_DAY, US_PER_HOUR, parse_timestamp

NOW = parse_timestamp("2026-11-20T12:00:00Z")
DAY = 24 * 3600


def stage_rule(stage: str, **conditions: object) -> AutomationRule:
    return AutomationRule("r", Trigger("stage_reached", stage=stage), Conditions(**conditions))  # type: ignore[arg-type]


def at(score: float, stage: str, velocity: int = 0) -> LeadMoment:
    return LeadMoment(score, stage, velocity)


def test_stage_reached_fires_when_the_stage_is_reached_from_below() -> None:
    rule = stage_rule("hot")
    assert rule_fires(rule, at(40, "warm"), at(70, "hot"), None)
    assert rule_fires(rule, at(40, "warm"), at(120, "qualified"), None)  # at or above


def test_stage_reached_does_not_fire_when_already_at_or_above() -> None:
    rule = stage_rule("hot")
    assert not rule_fires(rule, at(70, "hot"), at(80, "hot"), None)
    assert not rule_fires(rule, at(120, "qualified"), at(70, "hot"), None)
    assert not rule_fires(rule, at(10, "cold"), at(40, "warm"), None)


def test_a_new_lead_counts_as_cold_before() -> None:
    assert moment_before(None, default_config(), NOW) == LeadMoment(0.0, "cold", 0)
    assert rule_fires(
        stage_rule("warm"), moment_before(None, default_config(), NOW), at(30, "warm"), None
    )
    assert not rule_fires(stage_rule("cold"), at(0, "cold"), at(5, "cold"), None)


def test_moment_before_is_the_current_state_decayed_to_now() -> None:
    summary = LeadSummary("p", "l", score=100.0, last_timestamp=NOW - 9 * US_PER_DAY, event_count=1)
    before = moment_before(summary, default_config(), NOW)
    assert before.stage == "hot" and before.score == 90.25  # two days of 5 % after the grace


def test_score_crossed_compares_the_rounded_score() -> None:
    rule = AutomationRule("r", Trigger("score_crossed", threshold=50))
    assert rule_fires(rule, at(49.99, "warm"), at(50.0, "warm"), None)
    assert not rule_fires(rule, at(50.0, "warm"), at(80, "hot"), None)
    assert not rule_fires(rule, at(20, "cold"), at(49.99, "warm"), None)


def test_event_fires_on_an_applied_event_of_that_type_only() -> None:
    rule = AutomationRule("r", Trigger("event", event_type="demo_request"))
    assert rule_fires(rule, at(0, "cold"), at(50, "warm"), "demo_request")
    assert not rule_fires(rule, at(0, "cold"), at(50, "warm"), "page_view")
    assert not rule_fires(rule, at(0, "cold"), at(50, "warm"), None)  # a merge applies none


def test_conditions_must_all_hold_just_after_the_change() -> None:
    trigger = Trigger("event", event_type="x")
    after = at(70, "hot", velocity=3)
    assert rule_fires(
        AutomationRule("r", trigger, Conditions(70, 3, ("hot",))), at(0, "cold"), after, "x"
    )
    assert not rule_fires(
        AutomationRule("r", trigger, Conditions(min_score=70.01)), at(0, "cold"), after, "x"
    )
    assert not rule_fires(
        AutomationRule("r", trigger, Conditions(min_velocity=4)), at(0, "cold"), after, "x"
    )
    assert not rule_fires(
        AutomationRule("r", trigger, Conditions(stages=("qualified",))), at(0, "cold"), after, "x"
    )


def test_decay_alone_never_fires_a_rise() -> None:
    # decay only lowers a score: no change it makes can reach a stage or cross upwards
    for stage in STAGES:
        assert not rule_fires(stage_rule(stage), at(120, "qualified"), at(95, "hot"), None)


def test_the_firing_id_is_per_project_rule_lead_and_day() -> None:
    base = firing_id("p", "r", "l", "2026-11-20")
    assert base == firing_id("p", "r", "l", "2026-11-20")
    others = {
        firing_id("q", "r", "l", "2026-11-20"),
        firing_id("p", "s", "l", "2026-11-20"),
        firing_id("p", "r", "m", "2026-11-20"),
        firing_id("p", "r", "l", "2026-11-21"),
        firing_id("p", "r:l", "", "2026-11-20"),  # no ambiguity from joining
    }
    assert base not in others and len(others) == 5


def test_the_day_is_the_utc_date_of_the_causing_event_and_old_causes_are_stale() -> None:
    rule = AutomationRule("r", Trigger("event", event_type="x"))
    recent = Cause("e1", parse_timestamp("2026-11-19T23:30:00-02:00"), "x")  # 20th in UTC
    [f] = firings_for(
        "p",
        "l",
        [rule],
        at(0, "cold"),
        at(5, "cold"),
        recent,
        applied_event_type="x",
        now=NOW,
        max_age_us=24 * US_PER_HOUR,
    )
    assert f.day == "2026-11-20" and not f.stale
    old = Cause("e2", NOW - 25 * US_PER_HOUR, "x")
    [g] = firings_for(
        "p",
        "l",
        [rule],
        at(0, "cold"),
        at(5, "cold"),
        old,
        applied_event_type="x",
        now=NOW,
        max_age_us=24 * US_PER_HOUR,
    )
    assert g.stale and g.day == "2026-11-19"
    assert (
        firings_for(
            "p",
            "l",
            [rule],
            at(0, "cold"),
            at(5, "cold"),
            None,
            applied_event_type="x",
            now=NOW,
            max_age_us=1,
        )
        == []
    )


@given(before=st.floats(0, 500), after=st.floats(0, 500), threshold=st.floats(0, 500))
def test_score_crossed_fires_exactly_when_the_threshold_is_crossed_upwards(
    before: float, after: float, threshold: float
) -> None:
    rule = AutomationRule("r", Trigger("score_crossed", threshold=threshold))
    fired = rule_fires(rule, at(before, "cold"), at(after, "cold"), None)
    assert fired == (before < threshold <= after)


def test_only_408_429_and_5xx_are_retried() -> None:
    assert all(retryable_status(s) for s in (408, 429, 500, 502, 503, 599))
    assert not any(retryable_status(s) for s in (301, 400, 401, 403, 404, 410, 422))


@given(attempt=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_backoff_is_exponential_with_jitter_and_capped(attempt: int, seed: int) -> None:
    nominal = min(3600.0, 60 * 2 ** (attempt - 1))
    delay = backoff_delay(attempt, 60, 3600, rng=random.Random(seed))
    assert nominal / 2 <= delay <= nominal


def test_retry_after_is_a_floor_up_to_the_cap() -> None:
    assert backoff_delay(1, 0.1, 10, retry_after=5) == 5
    assert backoff_delay(1, 0.1, 10, retry_after=500) == 10


def test_the_default_schedule_is_at_least_8_attempts_over_at_least_an_hour() -> None:
    s = Settings.from_env()
    assert s.delivery_attempts >= 8
    shortest = sum(
        backoff_delay(n, s.delivery_backoff, s.delivery_backoff_max, rng=_Low())
        for n in range(1, 8)
    )
    assert shortest >= 3600, shortest  # even with the smallest jitter, 8 attempts span an hour


class _Low(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() -> None:
    b = Breaker(threshold=3, cooldown=10)
    for t in range(3):
        assert b.allow(t)
        b.failure(t)
    assert b.state == "open" and not b.allow(5)
    assert b.retry_at(5) == 12
    assert b.allow(13) and b.state == "half-open"
    assert not b.allow(13)  # one trial at a time
    b.failure(14)
    assert b.state == "open" and not b.allow(20)
    assert b.allow(24)
    b.success()
    assert b.state == "closed" and b.allow(24)


def test_a_success_resets_the_failure_count() -> None:
    b = Breaker(threshold=2, cooldown=10)
    b.failure(0)
    b.success()
    b.failure(1)
    assert b.state == "closed"


# -- fired_at: per-event evaluation that computes only the moments it needs --------------------

_SAMPLE_NOW = parse_timestamp("2026-03-01T00:00:00Z")
_TYPES = ["page_view", "email_open", "download", "demo_request", "signup", "unsubscribe", "x"]


def _rules(thresholds: list[int], condition: int) -> list[AutomationRule]:
    """Every trigger kind, some with conditions (they hold just after the change only)."""
    conditions = [
        Conditions(),
        Conditions(min_score=30.0),
        Conditions(min_velocity=2),
        Conditions(stages=("warm", "qualified")),
        Conditions(min_score=0.0),  # met by every lead: no moment asked for
    ]
    pick = conditions[condition % len(conditions)]
    return [
        *(AutomationRule(f"st-{s}", Trigger("stage_reached", stage=s), pick) for s in STAGES[1:]),
        *(
            AutomationRule(f"sc-{t}", Trigger("score_crossed", threshold=float(t)))
            for t in thresholds
        ),
        AutomationRule("ev-signup", Trigger("event", event_type="signup"), pick),
        AutomationRule("ev-demo", Trigger("event", event_type="demo_request")),
    ]


@settings(max_examples=2000, deadline=None)
@given(
    raw=st.lists(
        st.tuples(
            st.integers(0, 60 * 24).map(lambda h: _SAMPLE_NOW - h * US_PER_HOUR),
            st.sampled_from(_TYPES),
        ),
        min_size=1,
        max_size=25,
    ),
    split=st.integers(0, 25),
    thresholds=st.lists(st.integers(1, 300), min_size=1, max_size=3),
    condition=st.integers(0, 4),
)
@example(  # a late event of negative points raises the score past 120: it restarts the grace
    raw=[(_SAMPLE_NOW - 20 * US_PER_DAY, "demo_request")] * 4
    + [(_SAMPLE_NOW - 13 * US_PER_DAY, "unsubscribe")],
    split=4,
    thresholds=[120],
    condition=0,
)
def test_fired_at_equals_evaluating_every_event_of_the_batch(
    raw: list[tuple[int, str]], split: int, thresholds: list[int], condition: int
) -> None:
    """SPEC 9 evaluates each event's change in arrival order (late ones included).
    `fired_at` gives the same firings while asking for fewer moments: with no negative points
    in the batch (monotone) it bisects between the two ends, and it asks for nothing in between
    when no level is crossed; with negative points it evaluates every event."""
    from core.automation import fired_at, moment_after
    from core.lead import NewEvent, lead_view, score_events, summary_from_facts
    from core.scoring import count_in_window

    config = default_config()
    rules = _rules(thresholds, condition)
    events = [
        NewEvent(ts, f"e{i}", kind, config.points_for(kind)) for i, (ts, kind) in enumerate(raw)
    ]
    base = LeadSummary("p", "lead")
    start = min(split, len(events) - 1)  # events before `start` were applied by earlier batches

    def moment(upto: int) -> LeadMoment:
        if upto == 0:
            return moment_before(None, config, _SAMPLE_NOW)
        facts, _ = score_events(events[:upto], config)
        window = count_in_window((e.timestamp for e in events[:upto]), _SAMPLE_NOW)
        view = lead_view(summary_from_facts(base, facts), _SAMPLE_NOW, config, window)
        return moment_after(view)

    batch = events[start:]
    types = [e.event_type for e in batch]
    causes = [Cause(e.event_id, e.timestamp, e.event_type) for e in batch]
    expected: list[tuple[int, list[AutomationRule]]] = []
    fired_on: set[tuple[str, str]] = set()  # (rule, day): its firing id, decided once
    for k, t in enumerate(types, 1):
        fired = [
            r
            for r in rules
            if rule_fires(r, moment(start + k - 1), moment(start + k), t)
            and (r.id, causes[k - 1].day) not in fired_on
        ]
        fired_on |= {(r.id, causes[k - 1].day) for r in fired}
        if fired:
            expected.append((k, fired))
    asked: list[int] = []

    def moment_at(k: int) -> LeadMoment:
        asked.append(k)
        return moment(start + k)

    negative = [k for k, e in enumerate(batch, 1) if e.points < 0]
    stamps = [e.timestamp for e in batch]
    assert fired_at(rules, types, stamps, moment_at, negative=negative) == expected
    facts, _ = score_events(events[:start], config)  # the lead before the batch, as stored
    stored = summary_from_facts(base, facts) if facts else None
    drop = sum(e.points for e in batch if e.points < 0)
    floor = floor_before(stored, config, _SAMPLE_NOW, drop)
    for k in range(len(batch) + 1):  # the floor is one: no prefix's lead is below it
        assert moment(start + k).score >= floor.score
    asked.clear()
    got = fired_at(rules, types, stamps, moment_at, negative=negative, floor=floor)
    assert got == expected
    levels = [AutomationRule(r.id, r.trigger) for r in rules if r.trigger.kind != "event"]
    if not negative and not any(
        rule_fires(r, moment(start), moment(len(events)), None) for r in levels
    ):
        # no level crossed between the two ends: nothing in between was asked for
        assert set(asked) - {0, len(batch)} <= {
            k for k, t in enumerate(types, 1) if t in ("signup", "demo_request")
        }


def test_fired_at_evaluates_an_event_of_negative_points_on_its_own() -> None:
    """Why `negative` exists: a negative event can drop the lead below a level that a later
    event crosses again, or even raise it (it restarts the grace period in the past); the
    two ends of the batch alone would miss both."""
    from core.automation import fired_at

    rule = AutomationRule("sc", Trigger("score_crossed", threshold=10.0))
    types, stamps = ["unsubscribe", "page_view"], [NOW, NOW + US_PER_DAY]
    dropped = [at(15, "cold"), at(5, "cold"), at(12, "cold")]  # -10 points, then +7
    assert fired_at([rule], types, stamps, dropped.__getitem__, negative=[1]) == [(2, [rule])]
    assert fired_at([rule], types, stamps, dropped.__getitem__) == []  # taken as monotone
    raised = [at(5, "cold"), at(11, "cold"), at(11, "cold")]  # a late negative event raised it
    assert fired_at([rule], types, stamps, raised.__getitem__, negative=[1]) == [(1, [rule])]
