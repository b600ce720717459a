"""Lead state and how one distinct event changes it (SPEC 3 and 4).

A lead is kept as a small fixed-size `LeadSummary` plus one `EventFact` per distinct event, stored
by the caller in (timestamp, eventId) order. An event later than every known one is appended in
O(1) from the summary alone; a late one needs its predecessor and the facts after it, whose chain
is recomputed (`apply_event`). Because every path evaluates the same chain in the same order with
the same float operations, the result is bit-identical to scoring the sorted set from scratch
(`score_events`), whatever the arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.config import ScoringConfig
from core.scoring import decay, report, stage_for, step, velocity_score

__all__ = [
    "Applied",
    "EventFact",
    "HistoryRow",
    "LeadSummary",
    "LeadView",
    "NewEvent",
    "apply_event",
    "current_score",
    "lead_view",
    "rechain",
    "score_events",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A deduplicated event about to be added to a lead, with its points fixed at scoring time."""

    timestamp: int
    event_id: str
    event_type: str
    points: int

    @property
    def order(self) -> tuple[int, str]:
        return (self.timestamp, self.event_id)


@dataclass(frozen=True, slots=True)
class EventFact:
    """What the store keeps per distinct event to recompute the chain: O(1) bytes."""

    timestamp: int
    event_id: str
    event_type: str
    points: int
    score_after: float

    @property
    def order(self) -> tuple[int, str]:
        return (self.timestamp, self.event_id)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A row of the timeline (SPEC 4). `properties` is None on rows that were only rescored."""

    event_id: str
    event_type: str
    timestamp: int
    points: int
    score_before: float
    score_after: float
    properties: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LeadSummary:
    """The fixed-size part of a canonical lead."""

    project_id: str
    lead_id: str
    score: float = 0.0  # scoreAfter of the last event, not decayed to now
    last_timestamp: int | None = None
    last_event_id: str = ""
    first_timestamp: int | None = None
    event_count: int = 0
    version: int = 0
    email: str | None = None
    name: str | None = None
    company: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    pending_email: str | None = None  # claimed, awaiting the identity agent's reply
    email_claim: tuple[int, str] | None = None  # (timestamp, eventId) of the owning identify
    # highest source offset applied, per source (events, lead-commands) of the lead's partition:
    # a record at or below it was fully applied before a crash and only its outputs are redone
    applied: tuple[int, int] = (-1, -1)
    anonymous_ids: tuple[str, ...] = field(default_factory=tuple)
    # (timestamp, eventId) of the identify whose claim is pending: only its reply may promote
    pending_claim: tuple[int, str] | None = None

    @property
    def identified(self) -> bool:
        return self.email is not None

    @property
    def last_order(self) -> tuple[int, str] | None:
        if self.last_timestamp is None:
            return None
        return (self.last_timestamp, self.last_event_id)


@dataclass(frozen=True, slots=True)
class Applied:
    summary: LeadSummary
    facts: list[EventFact]  # facts to (re)write, the new one included
    rows: list[HistoryRow]  # history rows that are new or changed, in chain order


def _link(
    previous_score: float | None,
    previous_timestamp: int | None,
    timestamp: int,
    points: int,
    config: ScoringConfig,
) -> tuple[float, float]:
    """(scoreBefore, scoreAfter) of an event given the event before it in the chain, if any."""
    if previous_score is None or previous_timestamp is None:
        return 0.0, max(0.0, float(points))
    return step(previous_score, timestamp - previous_timestamp, points, config)


def apply_event(
    summary: LeadSummary,
    event: NewEvent,
    config: ScoringConfig,
    *,
    properties: Mapping[str, Any] | None = None,
    predecessor: EventFact | None = None,
    successors: Iterable[EventFact] = (),
    exhaustive: bool = False,
) -> Applied:
    """Add one distinct event to a lead.

    For an in-order event (the common case) `predecessor` and `successors` are not needed.
    For a late event the caller passes the fact just before it and every fact after it.
    """
    last = summary.last_order
    if last is None or event.order > last:
        return _append(summary, event, config, properties)
    return _insert(summary, event, config, properties, predecessor, successors, exhaustive)


def _append(
    summary: LeadSummary,
    event: NewEvent,
    config: ScoringConfig,
    properties: Mapping[str, Any] | None,
) -> Applied:
    before, after = _link(
        summary.score, summary.last_timestamp, event.timestamp, event.points, config
    )
    fact = EventFact(event.timestamp, event.event_id, event.event_type, event.points, after)
    row = HistoryRow(
        event.event_id,
        event.event_type,
        event.timestamp,
        event.points,
        before,
        after,
        properties or {},
    )
    first = summary.first_timestamp if summary.first_timestamp is not None else event.timestamp
    new_summary = replace(
        summary,
        score=after,
        last_timestamp=event.timestamp,
        last_event_id=event.event_id,
        first_timestamp=min(first, event.timestamp),
        event_count=summary.event_count + 1,
        version=summary.version + 1,
    )
    return Applied(new_summary, [fact], [row])


def _insert(
    summary: LeadSummary,
    event: NewEvent,
    config: ScoringConfig,
    properties: Mapping[str, Any] | None,
    predecessor: EventFact | None,
    successors: Iterable[EventFact],
    exhaustive: bool = False,
) -> Applied:
    before, after = _link(
        predecessor.score_after if predecessor else None,
        predecessor.timestamp if predecessor else None,
        event.timestamp,
        event.points,
        config,
    )
    facts = [EventFact(event.timestamp, event.event_id, event.event_type, event.points, after)]
    rows = [
        HistoryRow(
            event.event_id,
            event.event_type,
            event.timestamp,
            event.points,
            before,
            after,
            properties or {},
        )
    ]
    previous = facts[0]
    # The new event always precedes the old last one, so the chain's end is that event
    # unless the walk below recomputes it.
    end_score = summary.score
    for fact in successors:
        before, after = step(
            previous.score_after, fact.timestamp - previous.timestamp, fact.points, config
        )
        unchanged_from_here = after == fact.score_after
        previous = replace(fact, score_after=after)
        facts.append(previous)
        rows.append(
            HistoryRow(fact.event_id, fact.event_type, fact.timestamp, fact.points, before, after)
        )
        if unchanged_from_here and not exhaustive:
            break  # same scoreAfter: every later link is as stored
    else:
        end_score = previous.score_after
    first = summary.first_timestamp if summary.first_timestamp is not None else event.timestamp
    new_summary = replace(
        summary,
        score=end_score,
        first_timestamp=min(first, event.timestamp),
        event_count=summary.event_count + 1,
        version=summary.version + 1,
    )
    return Applied(new_summary, facts, rows)


def score_events(
    events: Iterable[NewEvent], config: ScoringConfig
) -> tuple[list[EventFact], list[HistoryRow]]:
    """The reference: score a set of events from scratch (first occurrence of an eventId wins)."""
    distinct: dict[str, NewEvent] = {}
    for event in events:
        distinct.setdefault(event.event_id, event)
    return rechain(sorted(distinct.values(), key=lambda e: e.order), config)


def rechain(
    ordered: Iterable[NewEvent], config: ScoringConfig, previous: EventFact | None = None
) -> tuple[list[EventFact], list[HistoryRow]]:
    """The chain of SPEC 3 over events already in (timestamp, eventId) order, continuing from
    `previous` (the fact before the first of them, if any)."""
    facts: list[EventFact] = []
    rows: list[HistoryRow] = []
    for event in ordered:
        before, after = _link(
            previous.score_after if previous else None,
            previous.timestamp if previous else None,
            event.timestamp,
            event.points,
            config,
        )
        previous = EventFact(event.timestamp, event.event_id, event.event_type, event.points, after)
        facts.append(previous)
        rows.append(
            HistoryRow(
                event.event_id, event.event_type, event.timestamp, event.points, before, after
            )
        )
    return facts, rows


def current_score(summary: LeadSummary, now: int, config: ScoringConfig) -> float:
    """The score decayed from the last event to `now` (not rounded)."""
    if summary.last_timestamp is None:
        return 0.0
    return decay(summary.score, now - summary.last_timestamp, config.grace_days, config.daily_rate)


@dataclass(frozen=True, slots=True)
class LeadView:
    """A lead as users see it at `now` (SPEC 6 and 8)."""

    summary: LeadSummary
    current_score: float
    lead_stage: str
    events_last_24h: int
    velocity_score: int
    computed_at: int


def lead_view(
    summary: LeadSummary, now: int, config: ScoringConfig, events_last_24h: int
) -> LeadView:
    score = current_score(summary, now, config)
    return LeadView(
        summary=summary,
        current_score=report(score),
        lead_stage=stage_for(score, config.thresholds),
        events_last_24h=events_last_24h,
        velocity_score=velocity_score(events_last_24h),
        computed_at=now,
    )


def summary_from_facts(base: LeadSummary, facts: Sequence[EventFact]) -> LeadSummary:
    """A summary whose chain fields are those of a full, sorted fact list (used by rebuilds)."""
    if not facts:
        return replace(
            base,
            score=0.0,
            last_timestamp=None,
            last_event_id="",
            first_timestamp=None,
            event_count=0,
        )
    return replace(
        base,
        score=facts[-1].score_after,
        last_timestamp=facts[-1].timestamp,
        last_event_id=facts[-1].event_id,
        first_timestamp=facts[0].timestamp,
        event_count=len(facts),
    )
