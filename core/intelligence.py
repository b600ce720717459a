"""Lead intelligence: risk, velocity trend, next best action and churn estimate.

The formulas, as documented for users:

- risk: `low` when the last event is less than 3 days old, `medium` under 7 days, else `high`.
- velocity trend: events in the last 24 h vs the 24 h before: `accelerating` / `steady` /
  `decelerating`; `change` is the difference.
- churn estimate: logistic in the days since the last event,
  `1 / (1 + exp(-(days - 14) / 3))` — about 1 % at 0 days, 50 % at two weeks, 94 % at 3 weeks.
- next best action: from the stage, overridden by `high` risk (re-engage first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.timeutil import US_PER_DAY

__all__ = ["Intelligence", "assess"]

_ACTIONS = {
    "qualified": "hand off to sales: schedule a call",
    "hot": "offer a demo or a trial extension",
    "warm": "nurture: send a case study and pricing",
    "cold": "add to an awareness campaign",
}


@dataclass(frozen=True, slots=True)
class Intelligence:
    days_since_last_event: float | None
    risk: str
    events_last_24h: int
    events_previous_24h: int
    velocity_trend: str
    churn_probability: float
    next_best_action: str


def assess(
    stage: str, last_event_at: int | None, now: int, events_last_24h: int, events_previous_24h: int
) -> Intelligence:
    if last_event_at is None:
        days = None
        risk = "high"
        churn = 1.0
    else:
        days = max(0.0, (now - last_event_at) / US_PER_DAY)
        risk = "low" if days < 3 else "medium" if days < 7 else "high"
        churn = 1.0 / (1.0 + math.exp(-(days - 14.0) / 3.0))
    if events_last_24h > events_previous_24h:
        trend = "accelerating"
    elif events_last_24h < events_previous_24h:
        trend = "decelerating"
    else:
        trend = "steady"
    action = "re-engage: send a win-back email" if risk == "high" else _ACTIONS[stage]
    return Intelligence(
        days_since_last_event=None if days is None else round(days, 2),
        risk=risk,
        events_last_24h=events_last_24h,
        events_previous_24h=events_previous_24h,
        velocity_trend=trend,
        churn_probability=round(churn, 4),
        next_best_action=action,
    )
