"""SPEC 3, `decay(s, gap)`: with d = floor(gap / 1 day), once d > graceDays the score is
`s * (1 - dailyRate) ** (d - graceDays)`; within the grace period it is unchanged."""

from __future__ import annotations

import math

import pytest

from core.config import ScoringConfig
from core.lead import LeadSummary, current_score
from core.scoring import decay, step
from core.timeutil import US_PER_DAY, US_PER_HOUR, US_PER_SECOND

GRACE = 7
RATE = 0.05
MINUTE = 60 * US_PER_SECOND


def days(n: float) -> int:
    return int(n * US_PER_DAY)


def test_decay_gap_of_exactly_grace_days_does_not_decay() -> None:
    assert decay(100.0, days(7), GRACE, RATE) == 100.0


def test_decay_gap_just_under_eight_days_does_not_decay() -> None:
    gap = days(7) + 23 * US_PER_HOUR + 59 * MINUTE
    assert decay(100.0, gap, GRACE, RATE) == 100.0
    assert decay(100.0, days(8) - 1, GRACE, RATE) == 100.0


def test_decay_gap_of_exactly_eight_days_is_one_day_of_five_percent() -> None:
    assert decay(100.0, days(8), GRACE, RATE) == 100.0 * (1 - 0.05) ** 1
    assert decay(100.0, days(8), GRACE, RATE) == pytest.approx(95.0)


def test_decay_counts_whole_days_only_floor_of_gap() -> None:
    # 9 days 23h59m is still d = 9, i.e. two decayed days; 10 days is three.
    assert decay(80.0, days(10) - MINUTE, GRACE, RATE) == 80.0 * 0.95**2
    assert decay(80.0, days(9), GRACE, RATE) == 80.0 * 0.95**2
    assert decay(80.0, days(10), GRACE, RATE) == 80.0 * 0.95**3


def test_decay_is_computed_in_spec_order_bit_for_bit() -> None:
    s, d = 86.7125, 12
    assert decay(s, days(d), GRACE, RATE).hex() == (s * (1 - RATE) ** (d - GRACE)).hex()


def test_decay_of_short_gaps_and_zero_gap_is_identity() -> None:
    for gap in (0, 1, US_PER_HOUR, days(1), days(3.5), days(7)):
        assert decay(42.5, gap, GRACE, RATE) == 42.5


@pytest.mark.parametrize("gap_days", [400, 10_000, 10_000_000])
def test_decay_of_long_gaps_stays_non_negative_and_finite(gap_days: int) -> None:
    value = decay(1_000.0, days(gap_days), GRACE, RATE)
    assert math.isfinite(value)
    assert 0.0 <= value < 1_000.0
    if gap_days == 400:
        assert value == 1_000.0 * 0.95**393
        assert value > 0.0


def test_decay_of_zero_score_stays_zero() -> None:
    assert decay(0.0, days(30), GRACE, RATE) == 0.0


def test_decay_uses_custom_grace_days_and_daily_rate() -> None:
    # graceDays = 2, dailyRate = 10 %: a 2-day gap keeps the score, 3 days is one day of 10 %.
    assert decay(50.0, days(2), 2, 0.10) == 50.0
    assert decay(50.0, days(3) - 1, 2, 0.10) == 50.0
    assert decay(50.0, days(3), 2, 0.10) == 50.0 * 0.9
    assert decay(50.0, days(6), 2, 0.10) == 50.0 * 0.9**4


def test_decay_with_zero_grace_decays_from_the_first_full_day() -> None:
    assert decay(10.0, days(1) - 1, 0, 0.5) == 10.0
    assert decay(10.0, days(1), 0, 0.5) == 5.0


def test_decay_config_is_honoured_by_the_chain_step_and_current_score() -> None:
    config = ScoringConfig(grace_days=1, daily_rate=0.5)
    before, after = step(40.0, days(2), 10, config)
    assert (before, after) == (20.0, 30.0)
    assert step(40.0, days(3), 10, config) == (10.0, 20.0)
    summary = LeadSummary("p", "l", score=40.0, last_timestamp=0, last_event_id="e", event_count=1)
    assert current_score(summary, days(2), config) == 20.0
    assert current_score(summary, days(2) - 1, config) == 40.0


def test_decay_defaults_are_one_week_grace_and_five_percent_a_day() -> None:
    config = ScoringConfig()
    assert config.grace_days == 7
    assert config.daily_rate == 0.05
