"""Automation (SPEC 9), the pure part: which rules fire for a change of a lead, under which firing
id, and when a failed delivery is tried again.

No I/O and no clock: the caller passes the lead's state just before and just after a change (both
at `now`) and `now` itself, so every decision is exact in tests and the same on every worker.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from core.config import ScoringConfig
from core.lead import LeadSummary, LeadView, current_score
from core.scoring import report, stage_for
from core.timeutil import US_PER_DAY, US_PER_SECOND, format_timestamp

__all__ = [
    "STAGES",
    "AutomationRule",
    "Breaker",
    "Cause",
    "Conditions",
    "Firing",
    "LeadMoment",
    "Trigger",
    "backoff_delay",
    "fired_at",
    "firing_id",
    "firings_for",
    "firings_of",
    "floor_before",
    "moment_after",
    "moment_before",
    "retryable_status",
    "rule_fires",
]

STAGES = ("cold", "warm", "hot", "qualified")
_RANK = {s: i for i, s in enumerate(STAGES)}


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: str  # stage_reached | score_crossed | event
    stage: str | None = None
    threshold: float | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class Conditions:
    min_score: float | None = None
    min_velocity: int | None = None
    stages: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AutomationRule:
    id: str
    trigger: Trigger
    conditions: Conditions = field(default_factory=Conditions)


@dataclass(frozen=True, slots=True)
class LeadMoment:
    """What a trigger compares: the lead's current state at `now` (score rounded as shown)."""

    score: float
    stage: str
    velocity: int = 0


@dataclass(frozen=True, slots=True)
class Cause:
    """The event that caused the change; for a merge, rebuild or rescore, the lead's latest."""

    event_id: str
    timestamp: int
    event_type: str | None = None

    @property
    def day(self) -> str:
        return format_timestamp(self.timestamp)[:10]


@dataclass(frozen=True, slots=True)
class Firing:
    firing_id: str
    rule_id: str
    day: str
    cause: Cause
    stale: bool  # the cause is older than maxTriggerAge: recorded as skipped, never delivered


NEW_LEAD = LeadMoment(0.0, "cold", 0)


def moment_before(summary: LeadSummary | None, config: ScoringConfig, now: int) -> LeadMoment:
    """The lead just before a change, from the summary the caller already holds (no table read;
    velocity is not needed before: conditions hold just after the change)."""
    if summary is None or summary.last_timestamp is None:
        return NEW_LEAD
    score = current_score(summary, now, config)
    return LeadMoment(report(score), stage_for(score, config.thresholds))


def floor_before(
    summary: LeadSummary | None, config: ScoringConfig, now: int, negative_points: int
) -> LeadMoment:
    """A moment that no lead after a batch's prefix is below, for a batch whose events of
    negative points sum to `negative_points` (≤ 0): an event with points ≥ 0 never lowers the
    lead's score at now, and one with negative points lowers it by at most their size (every
    later link of the chain is non-decreasing in its input with a slope ≤ 1: decay multiplies by
    a factor ≤ 1, the floor at 0 only raises, and the grace period the event restarts only
    keeps more)."""
    score = (current_score(summary, now, config) if summary is not None else 0.0) + negative_points
    return LeadMoment(report(score), stage_for(score, config.thresholds))


def moment_after(view: LeadView) -> LeadMoment:
    return LeadMoment(view.current_score, view.lead_stage, view.velocity_score)


def firing_id(project_id: str, rule_id: str, lead_id: str, day: str) -> str:
    """Stable for `(project, rule, canonical lead, UTC day)`: every worker, every replay epoch and
    every rescore derives the same id, so one unique index decides "already fired" for ever."""
    digest = hashlib.sha256("\x1f".join((project_id, rule_id, lead_id, day)).encode()).hexdigest()
    return "fir_" + digest[:32]


def rule_fires(
    rule: AutomationRule, before: LeadMoment, after: LeadMoment, applied_event_type: str | None
) -> bool:
    t = rule.trigger
    if t.kind == "event":
        fired = applied_event_type is not None and applied_event_type == t.event_type
    else:
        reached = _reached(t)
        fired = reached(after) and not reached(before)
    return fired and _conditions_hold(rule.conditions, after)


def fired_at(
    rules: Sequence[AutomationRule],
    event_types: Sequence[str],
    timestamps: Sequence[int],
    moment_at: Callable[[int], LeadMoment],
    *,
    negative: Collection[int] = (),
    floor: LeadMoment | None = None,
) -> list[tuple[int, list[AutomationRule]]]:
    """Which rules fire at which event of a batch that applied events of `event_types` with
    `timestamps` (in arrival order) to a lead: `(k, rules)` pairs, k ascending, k the 1-based
    position of the event whose change fired them. `moment_at(k)` is the lead at now after the
    batch's first k events (0: before the batch); the caller computes it on demand (and caches
    it). `negative` holds the positions of the events with negative points; `floor`, if given,
    is a moment no prefix's lead is below (`floor_before`).

    This is SPEC 9's per-event evaluation, `rule_fires(rule, moment_at(k - 1), moment_at(k),
    event_types[k - 1])` for every k and rule, keeping for each rule only its first firing on
    each UTC day (the firing id is the same; the first is the one decided), without asking for
    every moment:
    - an `event` trigger can fire only at the events of its type, and only at the first of a
      day whose conditions hold;
    - an event with points ≥ 0 never lowers the lead's current score at now (the chain is
      monotone in each step's input, and an event restarts the grace period, so decaying in two
      steps never loses more than in one), and the stage is monotone in the score. So between
      two events of negative points a stage or score crossing happens at most once, at the first
      k at or past the level, found by bisection between the run's two ends; an event of
      negative points is evaluated on its own (it can lower the score, or even raise it: it
      restarts the grace period in the past);
    - a level the `floor` has reached is reached after every event: it cannot be crossed;
    - conditions every lead meets (`minScore: 0`) need no moment.
    A batch of n events without negative points costs the two ends (known to the caller) plus
    O(log n) moments per crossing rule that crosses, not n."""
    positions: dict[str, list[int]] = {}  # of the event types that event rules wait for
    wanted = {r.trigger.event_type for r in rules if r.trigger.kind == "event"}
    if wanted:
        for k, event_type in enumerate(event_types, 1):
            if event_type in wanted:
                positions.setdefault(event_type, []).append(k)
    fired: dict[int, set[int]] = {}
    for i, rule in enumerate(rules):
        t = rule.trigger
        if t.kind == "event":
            found = _first_per_day(
                rule, positions.get(t.event_type or "", []), timestamps, moment_at
            )
        else:
            found = _crossings(rule, len(event_types), moment_at, negative, floor)
            if len(found) > 1:  # several crossings (negative points between): one per day
                days = [timestamps[k - 1] // US_PER_DAY for k in found]
                found = [k for j, k in enumerate(found) if days[j] not in days[:j]]
        for k in found:
            fired.setdefault(k, set()).add(i)
    return [(k, [rules[i] for i in sorted(fired[k])]) for k in sorted(fired)]


def _first_per_day(
    rule: AutomationRule,
    positions: list[int],
    timestamps: Sequence[int],
    moment_at: Callable[[int], LeadMoment],
) -> list[int]:
    """An `event` rule's firings: at the first event of its type each day whose conditions
    hold (later ones that day have the same firing id: not asked about)."""
    vacuous = _vacuous(rule.conditions)
    days: set[int] = set()
    found = []
    for k in positions:
        day = timestamps[k - 1] // US_PER_DAY
        if day not in days and (vacuous or _conditions_hold(rule.conditions, moment_at(k))):
            days.add(day)
            found.append(k)
    return found


def _crossings(
    rule: AutomationRule,
    n: int,
    moment_at: Callable[[int], LeadMoment],
    negative: Collection[int],
    floor: LeadMoment | None,
) -> list[int]:
    """A stage or score rule's firings: where the level is crossed upwards, conditions held."""
    reached = _reached(rule.trigger)
    if floor is not None and reached(floor):
        return []
    found = []
    start = 0  # a run of events with points >= 0 after `start`
    for end in [*sorted(negative), n + 1]:
        last = end - 1
        if last > start and reached(moment_at(last)) and not reached(moment_at(start)):
            low, high = start + 1, last  # the first k of the run whose moment has reached it
            while low < high:
                middle = (low + high) // 2
                if reached(moment_at(middle)):
                    high = middle
                else:
                    low = middle + 1
            found.append(low)
        if end <= n and reached(moment_at(end)) and not reached(moment_at(last)):
            found.append(end)  # the event of negative points itself crossed it
        start = end
    if _vacuous(rule.conditions):
        return found
    return [k for k in found if _conditions_hold(rule.conditions, moment_at(k))]


@cache
def _reached(t: Trigger) -> Callable[[LeadMoment], bool]:
    """A crossing trigger's level: it fires where a change goes from below it to at or above."""
    if t.kind == "stage_reached":
        target = _RANK[t.stage or "qualified"]
        return lambda m: _RANK[m.stage] >= target
    if t.kind == "score_crossed":
        threshold = t.threshold if t.threshold is not None else 0.0
        return lambda m: m.score >= threshold
    raise ValueError(f"unknown trigger kind {t.kind!r}")


def _vacuous(c: Conditions) -> bool:
    """Conditions that every lead meets (a score and a velocity are never negative): no need to
    compute the lead's moment to check them."""
    return (
        (c.min_score is None or c.min_score <= 0)
        and (c.min_velocity is None or c.min_velocity <= 0)
        and c.stages is None
    )


def _conditions_hold(c: Conditions, after: LeadMoment) -> bool:
    if c.min_score is not None and after.score < c.min_score:
        return False
    if c.min_velocity is not None and after.velocity < c.min_velocity:
        return False
    return c.stages is None or after.stage in c.stages


def firings_for(
    project_id: str,
    lead_id: str,
    rules: Iterable[AutomationRule],
    before: LeadMoment,
    after: LeadMoment,
    cause: Cause | None,
    *,
    applied_event_type: str | None,
    now: int,
    max_age_us: int,
) -> list[Firing]:
    """The firing candidates of one change. `applied_event_type` is the type of the event the
    change applied (None for a merge, rebuild or rescore: those apply no new event). A lead
    without any event (no cause) fires nothing."""
    if cause is None:
        return []
    fired = [r for r in rules if rule_fires(r, before, after, applied_event_type)]
    return firings_of(project_id, lead_id, fired, cause, now=now, max_age_us=max_age_us)


def firings_of(
    project_id: str,
    lead_id: str,
    fired: Iterable[AutomationRule],
    cause: Cause,
    *,
    now: int,
    max_age_us: int,
) -> list[Firing]:
    """The firings of rules that fired for a change caused by `cause`: one id per rule, lead
    and day of the cause; stale when the cause is older than maxTriggerAge."""
    day = cause.day
    stale = now - cause.timestamp > max_age_us
    return [
        Firing(firing_id(project_id, r.id, lead_id, day), r.id, day, cause, stale) for r in fired
    ]


# -- delivery ----------------------------------------------------------------------------------


def retryable_status(status: int) -> bool:
    """SPEC 9: 408, 429 and 5xx are tried again; any other non-2xx fails at once."""
    return status in (408, 429) or 500 <= status <= 599


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1`, after `attempt` failed ones (1-based): exponential,
    capped, with "equal jitter" (half fixed, half random) so retries of many firings spread out
    but never come sooner than half the nominal delay; a receiver's Retry-After is a floor."""
    nominal = min(cap, base * 2 ** max(0, attempt - 1))
    jittered = nominal / 2 + (rng or random).uniform(0, nominal / 2)
    if retry_after is not None:
        jittered = max(jittered, min(retry_after, cap))
    return jittered


@dataclass(slots=True)
class Breaker:
    """A circuit breaker for one destination: closed → open after `threshold` consecutive
    failures; open for `cooldown` seconds, then half-open (one trial at a time); a success
    closes it, a failure re-opens it. Deliveries to an open destination are postponed, not
    dropped. Time is passed in (seconds, monotonic), so this is tested without sleeping."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at < self.cooldown or self.trial:
            return False
        self.trial = True  # half-open: let exactly one attempt through
        return True

    def retry_at(self, now: float) -> float:
        """When a postponed delivery should look again."""
        if self.opened_at is None:
            return now
        return max(now + 1.0, self.opened_at + self.cooldown)

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.trial = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = now

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.trial else "open"


def max_age_us(seconds: float) -> int:
    return int(seconds * US_PER_SECOND)


def schedule_total(attempts: int, base: float, cap: float) -> Sequence[float]:
    """Nominal gaps between `attempts` attempts (without jitter): for the README and tests."""
    return [min(cap, base * 2 ** max(0, n - 1)) for n in range(1, attempts)]
