"""The scoring arithmetic of SPEC 3: decay, the score chain, stages and velocity."""

from __future__ import annotations

from collections.abc import Iterable

from core.config import ScoringConfig, StageThresholds
from core.timeutil import US_PER_DAY

__all__ = [
    "VELOCITY_CAP",
    "VELOCITY_WINDOW_US",
    "decay",
    "in_velocity_window",
    "report",
    "stage_for",
    "step",
    "velocity_score",
]

VELOCITY_CAP = 10
VELOCITY_WINDOW_US = US_PER_DAY


def decay(score: float, gap_us: int, grace_days: int, daily_rate: float) -> float:
    """`s * (1 - rate) ** (d - grace)` once `d = floor(gap / 1 day)` exceeds the grace period."""
    days = gap_us // US_PER_DAY
    if days > grace_days:
        return score * (1.0 - daily_rate) ** (days - grace_days)
    return score


def step(
    score_after_previous: float, gap_us: int, points: int, config: ScoringConfig
) -> tuple[float, float]:
    """One link of the chain: (scoreBefore, scoreAfter) of an event `gap_us` after the last."""
    before = decay(score_after_previous, gap_us, config.grace_days, config.daily_rate)
    return before, max(0.0, before + points)


def report(score: float) -> float:
    """Scores are reported rounded to 2 decimals."""
    return round(score, 2)


def stage_for(current_score: float, thresholds: StageThresholds) -> str:
    """Stage of the reported (rounded) current score, so a shown 100.00 is always `qualified`."""
    shown = report(current_score)
    if shown >= thresholds.qualified:
        return "qualified"
    if shown >= thresholds.hot:
        return "hot"
    if shown >= thresholds.warm:
        return "warm"
    return "cold"


def in_velocity_window(timestamp_us: int, now_us: int) -> bool:
    return now_us - VELOCITY_WINDOW_US < timestamp_us <= now_us


def velocity_score(events_last_24h: int) -> int:
    return min(VELOCITY_CAP, events_last_24h)


def count_in_window(timestamps: Iterable[int], now_us: int) -> int:
    return sum(1 for ts in timestamps if in_velocity_window(ts, now_us))
