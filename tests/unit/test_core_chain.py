"""SPEC 3 (rules, score chain, current score, stage, velocity, dedup, counts) and SPEC 4 (history).

Each test drives the core the way the agent does, through `MemoryLead`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.config import DEFAULT_RULES, Rule, ScoringConfig, StageThresholds, default_config
from core.lead import (
    LeadSummary,
    apply_event,
    current_score,
    lead_view,
    score_events,
    summary_from_facts,
)
from core.scoring import (
    VELOCITY_CAP,
    count_in_window,
    in_velocity_window,
    report,
    stage_for,
    velocity_score,
)
from core.timeutil import US_PER_DAY, US_PER_HOUR, parse_timestamp
from tests.unit.core_support import MemoryLead, chain_fields, new_event

T0 = parse_timestamp("2026-02-01T00:00:00Z")
H = US_PER_HOUR
D = US_PER_DAY


def lead_with(*events: tuple[str, str, int], config: ScoringConfig | None = None) -> MemoryLead:
    """A lead fed (eventId, eventType, timestamp) triples in the given (log) order."""
    lead = MemoryLead(config=config or default_config())
    for event_id, event_type, ts in events:
        lead.add(new_event(event_id, event_type, ts, lead.config))
    return lead


def scores(lead: MemoryLead) -> list[tuple[float, float]]:
    return [(row.score_before, row.score_after) for row in lead.rows()]


# --- rules -----------------------------------------------------------------------------------


def test_rules_new_project_starts_with_the_spec_default_points() -> None:
    assert {k: (r.points, r.active) for k, r in DEFAULT_RULES.items()} == {
        "page_view": (5, True),
        "email_open": (10, True),
        "download": (15, True),
        "form_submit": (20, True),
        "signup": (30, True),
        "pricing_page_visit": (15, True),
        "webinar_attendance": (25, True),
        "demo_request": (50, True),
        "contract_signed": (100, True),
        "unsubscribe": (-20, True),
    }


def test_rules_unknown_event_type_scores_zero_but_is_recorded_and_counted() -> None:
    lead = lead_with(("e1", "page_view", T0), ("e2", "feature_used", T0 + H))
    row = lead.history["e2"]
    assert (row.points, row.score_before, row.score_after) == (0, 5.0, 5.0)
    assert lead.summary.event_count == 2
    assert lead.summary.last_event_id == "e2"
    assert lead.events_last_24h(T0 + 2 * H) == 2


def test_rules_inactive_rule_scores_zero_but_is_recorded_and_counted() -> None:
    rules = dict(DEFAULT_RULES) | {"webinar_attendance": Rule(25, active=False)}
    config = ScoringConfig(rules=rules)
    assert config.points_for("webinar_attendance") == 0
    lead = lead_with(("e1", "webinar_attendance", T0), config=config)
    assert lead.history["e1"].points == 0
    assert lead.summary.event_count == 1
    assert lead.summary.score == 0.0


def test_rules_points_are_fixed_when_the_event_is_scored() -> None:
    # A later rule change does not rescore: the fact keeps the points it was scored with.
    lead = lead_with(("e1", "signup", T0))
    changed = ScoringConfig(rules=dict(DEFAULT_RULES) | {"page_view": Rule(40)})
    lead.config = changed
    lead.add(new_event("e2", "page_view", T0 + H, changed))
    assert [row.points for row in lead.rows()] == [30, 40]
    # A late event re-chains the successors with their stored points, not the new rules.
    lead.add(new_event("e0", "page_view", T0 - H, changed))
    assert [row.points for row in lead.rows()] == [40, 30, 40]
    assert lead.summary.score == 110.0


# --- the chain -------------------------------------------------------------------------------


def test_chain_first_event_starts_from_zero() -> None:
    lead = lead_with(("e1", "signup", T0))
    assert scores(lead) == [(0.0, 30.0)]


def test_chain_score_is_floored_at_zero_by_negative_rules() -> None:
    lead = lead_with(("e1", "unsubscribe", T0), ("e2", "page_view", T0 + H))
    assert scores(lead) == [(0.0, 0.0), (0.0, 5.0)]
    assert lead.summary.score == 5.0


def test_chain_score_after_is_max_of_zero_and_before_plus_points() -> None:
    lead = lead_with(
        ("e1", "email_open", T0),
        ("e2", "unsubscribe", T0 + H),
        ("e3", "form_submit", T0 + 2 * H),
        ("e4", "unsubscribe", T0 + 3 * H),
    )
    assert scores(lead) == [(0.0, 10.0), (10.0, 0.0), (0.0, 20.0), (20.0, 0.0)]
    for row in lead.rows():
        assert row.score_after == max(0.0, row.score_before + row.points)


def test_chain_score_before_is_the_previous_score_after_decayed_over_the_gap() -> None:
    lead = lead_with(("e1", "contract_signed", T0), ("e2", "page_view", T0 + 10 * D))
    assert scores(lead) == [(0.0, 100.0), (100.0 * 0.95**3, 100.0 * 0.95**3 + 5)]


def test_chain_sorts_by_timestamp_then_event_id() -> None:
    # Equal timestamps: eventId breaks the tie, whatever the arrival order.
    lead = lead_with(("b", "unsubscribe", T0), ("a", "signup", T0), ("c", "page_view", T0 - H))
    assert [row.event_id for row in lead.rows()] == ["c", "a", "b"]
    assert scores(lead) == [(0.0, 5.0), (5.0, 35.0), (35.0, 15.0)]


def test_chain_late_event_inserts_its_row_in_place_and_rewrites_the_rows_after_it() -> None:
    lead = lead_with(("e1", "unsubscribe", T0 + H), ("e2", "page_view", T0 + 2 * H))
    assert scores(lead) == [(0.0, 0.0), (0.0, 5.0)]
    applied = lead.add(new_event("e0", "signup", T0))
    assert applied is not None
    assert [row.event_id for row in applied.rows] == ["e0", "e1", "e2"]
    assert scores(lead) == [(0.0, 30.0), (30.0, 10.0), (10.0, 15.0)]
    assert lead.summary.score == 15.0
    assert lead.summary.last_event_id == "e2"
    assert lead.summary.first_timestamp == T0


def test_chain_late_event_in_the_middle_uses_its_predecessor() -> None:
    lead = lead_with(("e1", "signup", T0), ("e3", "page_view", T0 + 20 * D))
    lead.add(new_event("e2", "email_open", T0 + 10 * D))
    e2_before = 30.0 * 0.95**3
    e3_before = (e2_before + 10) * 0.95**3
    assert scores(lead) == [(0.0, 30.0), (e2_before, e2_before + 10), (e3_before, e3_before + 5)]
    assert lead.rows()[-1].score_after == lead.summary.score


def test_chain_in_order_event_needs_only_the_summary() -> None:
    summary = LeadSummary("p", "l")
    config = default_config()
    first = apply_event(summary, new_event("e1", "signup", T0), config)
    second = apply_event(first.summary, new_event("e2", "download", T0 + 9 * D), config)
    assert [f.event_id for f in second.facts] == ["e2"]
    assert second.summary.score == 30.0 * 0.95**2 + 15
    assert second.summary.version == 2


def test_chain_matches_the_from_scratch_reference() -> None:
    log = [("e3", "download", T0 + 9 * D), ("e1", "signup", T0), ("e2", "unsubscribe", T0 + D)]
    lead = lead_with(*log)
    facts, rows = score_events([new_event(*e) for e in log], default_config())
    assert [chain_fields(r) for r in lead.rows()] == [chain_fields(r) for r in rows]
    assert lead.facts == facts
    assert lead.summary.score == facts[-1].score_after


def test_chain_rebuilt_summary_from_facts_equals_the_incremental_one() -> None:
    lead = lead_with(("e2", "signup", T0 + D), ("e1", "page_view", T0), ("e3", "email_open", T0))
    rebuilt = summary_from_facts(LeadSummary("prj_test", "lead"), lead.facts)
    assert rebuilt == replace(lead.summary, version=0)
    empty = summary_from_facts(lead.summary, [])
    assert (empty.score, empty.event_count, empty.last_timestamp) == (0.0, 0, None)


# --- history rows ------------------------------------------------------------------------------


def test_history_has_one_row_per_distinct_event_with_its_properties() -> None:
    lead = MemoryLead()
    lead.add(new_event("e2", "page_view", T0 + H), {"path": "/pricing"})
    lead.add(new_event("e1", "identify", T0), {"email": "x@example.com"})
    assert [row.event_id for row in lead.rows()] == ["e1", "e2"]
    # The rescored row of e2 keeps the properties it was first written with.
    assert lead.history["e2"].properties == {"path": "/pricing"}
    assert lead.history["e1"].properties == {"email": "x@example.com"}


def test_history_last_score_after_decayed_to_now_is_the_current_score() -> None:
    lead = lead_with(("e1", "demo_request", T0), ("e2", "page_view", T0 + H))
    now = T0 + 30 * D
    assert lead.rows()[-1].score_after == lead.summary.score
    assert lead.view(now).current_score == report(55.0 * 0.95 ** (29 - 7))


# --- dedup and counts --------------------------------------------------------------------------


def test_dedup_known_event_id_is_ignored_no_score_no_row_no_count() -> None:
    lead = lead_with(("e1", "signup", T0))
    before = lead.summary
    assert lead.add(new_event("e1", "signup", T0)) is None
    assert lead.summary == before
    assert len(lead.rows()) == 1


def test_dedup_first_occurrence_in_the_log_wins() -> None:
    lead = lead_with(("e1", "signup", T0), ("e1", "contract_signed", T0 - D))
    assert [(r.event_type, r.timestamp) for r in lead.rows()] == [("signup", T0)]
    assert lead.summary.score == 30.0


def test_counts_event_count_first_and_last_event_at() -> None:
    lead = lead_with(
        ("e2", "page_view", T0 + D),
        ("e1", "x_unknown", T0),
        ("e3", "unsubscribe", T0 + 2 * D),
        ("e1", "page_view", T0 + 3 * D),
    )
    assert lead.summary.event_count == 3
    assert lead.summary.first_timestamp == T0
    assert lead.summary.last_timestamp == T0 + 2 * D
    assert lead.summary.version == 3


# --- current score -----------------------------------------------------------------------------


def test_current_score_is_decayed_from_the_last_event_to_now() -> None:
    lead = lead_with(("e1", "contract_signed", T0))
    assert current_score(lead.summary, T0 + 7 * D, lead.config) == 100.0
    assert current_score(lead.summary, T0 + 8 * D, lead.config) == 95.0
    assert current_score(LeadSummary("p", "l"), T0, lead.config) == 0.0


def test_current_score_is_reported_rounded_to_two_decimals() -> None:
    lead = lead_with(("e1", "demo_request", T0), ("e2", "page_view", T0 + H))
    view = lead.view(T0 + 10 * D)
    raw = current_score(lead.summary, T0 + 10 * D, lead.config)
    assert raw == 55.0 * 0.95**2
    assert view.current_score == round(raw, 2) == 49.64


# --- stage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "stage"),
    [
        (0.0, "cold"),
        (29.99, "cold"),
        (30.0, "warm"),
        (59.99, "warm"),
        (60.0, "hot"),
        (99.99, "hot"),
        (100.0, "qualified"),
        (1_000.0, "qualified"),
    ],
)
def test_stage_thresholds_qualified_100_hot_60_warm_30(score: float, stage: str) -> None:
    assert stage_for(score, StageThresholds()) == stage


def test_stage_uses_the_rounded_score_so_99_996_is_qualified_and_99_994_is_hot() -> None:
    # Deliberate: the stage agrees with the shown 2-decimal score (a shown 100.00 is qualified).
    assert stage_for(99.996, StageThresholds()) == "qualified"
    assert stage_for(99.994, StageThresholds()) == "hot"
    assert stage_for(59.996, StageThresholds()) == "hot"
    assert stage_for(29.994, StageThresholds()) == "cold"


def test_stage_uses_project_thresholds() -> None:
    thresholds = StageThresholds(qualified=50.0, hot=20.0, warm=10.0)
    assert [stage_for(s, thresholds) for s in (9.0, 10.0, 20.0, 50.0)] == [
        "cold",
        "warm",
        "hot",
        "qualified",
    ]


def test_stage_goes_down_as_the_score_decays() -> None:
    lead = lead_with(("e1", "contract_signed", T0))
    stages = [lead.view(T0 + n * D).lead_stage for n in (0, 7, 8, 17, 27, 31)]
    # d<=7: 100; d=8: 95; d=17: 100*.95**10=59.87; d=27: .95**20=35.85; d=31: .95**24=29.20
    assert stages == ["qualified", "qualified", "hot", "warm", "warm", "cold"]


# --- velocity ----------------------------------------------------------------------------------


def test_velocity_window_is_now_minus_24h_exclusive_to_now_inclusive() -> None:
    now = T0 + 5 * D
    assert in_velocity_window(now, now)
    assert in_velocity_window(now - D + 1, now)
    assert not in_velocity_window(now - D, now)
    assert not in_velocity_window(now + 1, now)


def test_velocity_events_last_24h_counts_the_window_boundaries_exactly() -> None:
    now = T0 + 5 * D
    lead = lead_with(
        ("at_start", "page_view", now - D),  # excluded
        ("just_in", "page_view", now - D + 1),
        ("middle", "page_view", now - 12 * H),
        ("at_now", "page_view", now),
        ("future", "page_view", now + 1),  # excluded
    )
    assert lead.events_last_24h(now) == 3
    assert count_in_window([now - D, now - D + 1, now, now + 1], now) == 2


def test_velocity_score_is_events_last_24h_capped_at_10() -> None:
    assert VELOCITY_CAP == 10
    assert [velocity_score(n) for n in (0, 1, 9, 10, 11, 500)] == [0, 1, 9, 10, 10, 10]
    lead = lead_with(*((f"e{i:02}", "page_view", T0 + i * H) for i in range(12)))
    view = lead.view(T0 + 12 * H)
    assert (view.events_last_24h, view.velocity_score) == (12, 10)
    assert lead.view(T0 + 11 * H + D - 1).velocity_score == 1
    assert lead.view(T0 + 11 * H + D).velocity_score == 0


def test_velocity_counts_unknown_and_negative_event_types_too() -> None:
    lead = lead_with(("e1", "unsubscribe", T0), ("e2", "mystery", T0 + H))
    assert lead.view(T0 + 2 * H).events_last_24h == 2


def test_lead_view_reports_score_stage_velocity_at_now() -> None:
    lead = lead_with(("e1", "signup", T0), ("e2", "pricing_page_visit", T0 + H))
    now = T0 + 2 * H
    view = lead_view(lead.summary, now, lead.config, lead.events_last_24h(now))
    assert (view.current_score, view.lead_stage, view.velocity_score) == (45.0, "warm", 2)
    assert view.computed_at == now
    assert view.summary is lead.summary
