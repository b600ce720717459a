"""One lead's events of one batch, applied in memory and written once (the scoring hot path).

`core.lead.apply_event` is the reference: it turns a frozen `LeadSummary` into a new one per
event. Here the same arithmetic (`core.scoring.step`, in the same order, so the floats are
bit-identical) runs over plain mutable fields, the lead's facts after a late event are read from
the store once per batch and kept in memory, and every key is written once per batch with its
final value: one summary per lead, one fact per changed fact, one dedup row per new event. The
property test `tests/unit/test_lead_batch.py` holds this equal to `core` on arbitrary logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from core.config import ScoringConfig
from core.identity import MAX_ANONYMOUS_IDS
from core.lead import EventFact, HistoryRow, LeadSummary, LeadView, lead_view
from core.scoring import VELOCITY_WINDOW_US, decay, in_velocity_window, step
from tables.codec import Source
from tables.leads import LeadStore
from tables.recent import stamp_of

__all__ = ["LeadBatch"]


def _order(event: tuple[int, str, str, int]) -> tuple[int, str]:
    return (event[0], event[1])


def _fact_order(fact: EventFact) -> tuple[int, str]:
    return (fact.timestamp, fact.event_id)


class LeadBatch:
    """A canonical lead while a batch applies its events: read once, written once."""

    __slots__ = (
        "_base",
        "_config",
        "_deferred",
        "_email_claim",
        "_exhaustive",
        "_fresh",
        "_in_window",
        "_key",
        "_now",
        "_partition",
        "_pred",
        "_redo",
        "_store",
        "_tail",
        "anonymous_ids",
        "applied",
        "count",
        "first_ts",
        "last_eid",
        "last_ts",
        "pending_claim",
        "pending_email",
        "rows",
        "score",
        "version",
        "writes",
    )

    def __init__(
        self,
        store: LeadStore,
        key: bytes,
        partition: int,
        base: LeadSummary,
        config: ScoringConfig,
        now: int,
        *,
        redone: frozenset[str] = frozenset(),
        known: bool = True,
    ) -> None:
        """`base` is the stored summary (a fresh one for a new lead, `known` False); `redone`
        the eventIds this batch applies again after a crash left their rows in part."""
        self._store, self._key, self._partition = store, key, partition
        self._base, self._config, self._now = base, config, now
        self.score = base.score
        self.last_ts = base.last_timestamp
        self.last_eid = base.last_event_id
        self.first_ts = base.first_timestamp
        self.count = base.event_count
        self.version = base.version
        self.pending_email = base.pending_email
        self.pending_claim = base.pending_claim
        self._email_claim = base.email_claim
        self.anonymous_ids = list(base.anonymous_ids)
        self.applied = list(base.applied)
        # A redo may meet facts a crash left rescored in part (walk every successor then), and
        # facts of events the summary does not count yet (left by the crash; not read then).
        self._redo = self._exhaustive = bool(redone)
        self._fresh: dict[str, Mapping[str, Any]] = {}  # eventId -> properties, new this batch
        self._tail: list[EventFact] | None = None  # facts from some point to the end, or None
        self._pred: EventFact | None = None  # the stored fact just before the tail
        self.writes: dict[str, EventFact] = {}  # facts to write, by eventId
        self.rows: dict[str, HistoryRow] = {}  # history rows that are new or changed
        self._in_window = 0
        self._deferred: list[tuple[int, str, str, int]] = []  # added, not chained yet
        if known and self.last_ts is not None and self.last_ts > now - VELOCITY_WINDOW_US:
            # events of the last 24 hours as stored (a redo's own facts are counted once)
            if self._redo:
                for fact in self._stored(
                    store.facts_from(key, partition, now - VELOCITY_WINDOW_US + 1)
                ):
                    if fact.timestamp > now:
                        break
                    self._in_window += 1
            else:
                self._in_window = store.count_recent(
                    key, partition, base, now - VELOCITY_WINDOW_US, now
                )

    # -- applying ----------------------------------------------------------------------------
    def add(
        self,
        timestamp: int,
        event_id: str,
        event_type: str,
        properties: Mapping[str, Any] | None,
        anonymous_id: str | None,
        source: Source,
    ) -> None:
        """Add one distinct event (deduplicated by the caller). Its link in the chain waits for
        `settle`: a batch's events of one lead are chained in one pass."""
        self._deferred.append(
            (timestamp, event_id, event_type, self._config.points_for(event_type))
        )
        self._fresh[event_id] = properties or {}
        if self.first_ts is None or timestamp < self.first_ts:
            self.first_ts = timestamp
        self.count += 1
        self.version += 1
        if self._now - VELOCITY_WINDOW_US < timestamp <= self._now:
            self._in_window += 1
        if (
            anonymous_id is not None
            and anonymous_id != self._base.lead_id
            and anonymous_id not in self.anonymous_ids
            and len(self.anonymous_ids) < MAX_ANONYMOUS_IDS
        ):
            self.anonymous_ids.append(anonymous_id)
        slot = source[0]
        if self.applied[slot] < source[1]:
            self.applied[slot] = source[1]

    def settle(self) -> None:
        """Chain the added events: appended after the last fact, or merged into the facts
        from the earliest of them on and the chain recomputed in one pass, stopping once past
        the last new event at a fact whose scoreAfter is unchanged (every later link is as
        stored), as `core.lead.apply_event` does per event."""
        new = self._deferred
        if not new:
            return
        self._deferred = []
        new.sort(key=_order)
        config = self._config
        first = (new[0][0], new[0][1])
        if self.last_ts is None or first > (self.last_ts, self.last_eid):
            score, last = self.score, self.last_ts
            for timestamp, event_id, event_type, points in new:
                if last is None:
                    before, score = 0.0, max(0.0, float(points))
                else:
                    before, score = step(score, timestamp - last, points, config)
                fact = EventFact(timestamp, event_id, event_type, points, score)
                if self._tail is not None:
                    self._tail.append(fact)
                self.writes[event_id] = fact
                self.rows[event_id] = HistoryRow(
                    event_id, event_type, timestamp, points, before, score, self._fresh[event_id]
                )
                last = timestamp
            self.score, self.last_ts, self.last_eid = score, new[-1][0], new[-1][1]
            return
        tail = self._tail_from(*first)
        last_new = (new[-1][0], new[-1][1])
        chain: list[EventFact] = []
        previous = self._pred
        n, k = 0, 0  # next of `tail`, next of `new`
        while k < len(new) or n < len(tail):
            if k < len(new) and (n == len(tail) or _order(new[k]) < _fact_order(tail[n])):
                timestamp, event_id, event_type, points = new[k]
                k += 1
                properties: Mapping[str, Any] | None = self._fresh[event_id]
                unchanged = False
            else:
                old = tail[n]
                n += 1
                timestamp, event_id, event_type, points = (
                    old.timestamp,
                    old.event_id,
                    old.event_type,
                    old.points,
                )
                properties = self._fresh.get(event_id)
                unchanged = True
            if previous is None:
                before, after = 0.0, max(0.0, float(points))
            else:
                before, after = step(
                    previous.score_after, timestamp - previous.timestamp, points, config
                )
            unchanged = unchanged and after == old.score_after
            previous = EventFact(timestamp, event_id, event_type, points, after)
            chain.append(previous)
            self.writes[event_id] = previous
            self.rows[event_id] = HistoryRow(
                event_id, event_type, timestamp, points, before, after, properties
            )
            if unchanged and k == len(new) and not self._exhaustive:
                chain += tail[n:]  # same scoreAfter past the last new event: as stored
                break
        self._tail = chain
        self.score = chain[-1].score_after
        if last_new > (self.last_ts, self.last_eid):
            self.last_ts, self.last_eid = last_new

    def _tail_from(self, timestamp: int, event_id: str) -> list[EventFact]:
        """The lead's facts from (timestamp, eventId) to the end, in memory: read from the
        store once per batch, merged with this batch's facts, and read again from an earlier
        point when an earlier late event needs it."""
        order = (timestamp, event_id)
        tail = self._tail
        if tail is not None and tail and (tail[0].timestamp, tail[0].event_id) <= order:
            return tail
        store, key, partition = self._store, self._key, self._partition
        mine = self.writes  # this batch's facts, at their latest values (stored ones are older)
        stored = [
            f
            for f in self._stored(store.facts_from(key, partition, timestamp, event_id))
            if f.event_id not in mine
        ]
        batch = [f for f in mine.values() if (f.timestamp, f.event_id) >= order]
        tail = sorted([*stored, *batch], key=lambda f: (f.timestamp, f.event_id))
        self._pred = self._predecessor(order)
        self._tail = tail
        return tail

    def _predecessor(self, order: tuple[int, str]) -> EventFact | None:
        """The fact just before `order`: stored, or one of this batch's."""
        mine = self.writes
        found = None
        earlier = self._store.facts_before(self._key, self._partition, *order)
        for fact in self._stored(earlier):
            if fact.event_id not in mine:
                found = fact
                break
        for fact in mine.values():
            at = (fact.timestamp, fact.event_id)
            if at < order and (found is None or at > (found.timestamp, found.event_id)):
                found = fact
        return found

    def _stored(self, facts: Iterator[EventFact]) -> Iterator[EventFact]:
        """Stored facts the summary counts: in a redo, a fact whose dedup row names a record
        past the summary's applied offsets was left by the crash and is applied again."""
        if not self._redo:
            yield from facts
            return
        store, key, partition, applied = self._store, self._key, self._partition, self._base.applied
        for fact in facts:
            _, source = store.event_source(key, fact.event_id, partition)
            if source is None or source[1] <= applied[source[0]]:
                yield fact

    def prefixes(self) -> Callable[[int], tuple[float, int]]:
        """The lead at now after only the first k of the events added (in the order added), as
        (current score, events of the last 24 hours), without applying them again: automation
        compares the lead before and after each event (SPEC 9), and asks about a few k only.

        Folds the links `settle` computes (the same `step` calls in the same order, so the same
        floats) over the stored chain, read once, from the earliest added event on; past the
        last event of the prefix, a link equal to the stored one means the rest is as stored.
        Not for a redo (its stored facts are filtered record by record): the caller applies the
        prefix as a lead of its own then."""
        if self._redo:
            raise ValueError("prefixes of a redo: apply the prefix instead")
        self.settle()
        base, config, now = self._base, self._config, self._now
        grace, rate = config.grace_days, config.daily_rate
        added = [(self.writes[e].timestamp, e, self.writes[e].points) for e in self._fresh]
        window0 = self._in_window - sum(1 for t, _, _ in added if in_velocity_window(t, now))
        start: tuple[float, int] | None = None  # (scoreAfter, timestamp) before the first link
        tail: list[tuple[int, str, int, float]] = []  # stored facts from the earliest added on
        first = min(((t, e) for t, e, _ in added), default=None)
        if base.last_timestamp is not None:
            if first is None or first > (base.last_timestamp, base.last_event_id):
                start = (base.score, base.last_timestamp)
            else:
                store, key, partition = self._store, self._key, self._partition
                pred = next(store.facts_before(key, partition, *first), None)
                start = None if pred is None else (pred.score_after, pred.timestamp)
                tail = [
                    (f.timestamp, f.event_id, f.points, f.score_after)
                    for f in store.facts_from(key, partition, *first)
                ]

        def at(k: int) -> tuple[float, int]:
            prefix = sorted(added[:k])
            window = window0 + sum(1 for t, _, _ in prefix if in_velocity_window(t, now))
            if not prefix and base.last_timestamp is None:
                return 0.0, window
            score, last = start if start is not None else (0.0, None)
            i = j = 0
            while i < len(prefix) or j < len(tail):
                stored_after = None
                if i < len(prefix) and (j == len(tail) or prefix[i][:2] < tail[j][:2]):
                    timestamp, _, points = prefix[i]
                    i += 1
                else:
                    timestamp, _, points, stored_after = tail[j]
                    j += 1
                if last is None:
                    score = max(0.0, float(points))
                else:
                    score = step(score, timestamp - last, points, config)[1]
                last = timestamp
                if i == len(prefix) and stored_after == score:
                    assert base.last_timestamp is not None
                    score, last = base.score, base.last_timestamp  # as stored from here on
                    break
            assert last is not None
            return decay(score, now - last, grace, rate), window

        return at

    # -- results -----------------------------------------------------------------------------
    def summary(self) -> LeadSummary:
        """The lead as it stands now (a new frozen summary: only for outputs and writes)."""
        self.settle()
        base = self._base
        return LeadSummary(
            project_id=base.project_id,
            lead_id=base.lead_id,
            score=self.score,
            last_timestamp=self.last_ts,
            last_event_id=self.last_eid,
            first_timestamp=self.first_ts,
            event_count=self.count,
            version=self.version,
            email=base.email,
            name=base.name,
            company=base.company,
            aliases=base.aliases,
            pending_email=self.pending_email,
            email_claim=self._email_claim,
            applied=(self.applied[0], self.applied[1]),
            anonymous_ids=tuple(self.anonymous_ids),
            pending_claim=self.pending_claim,
        )

    def view(self, summary: LeadSummary | None = None) -> LeadView:
        return lead_view(summary or self.summary(), self._now, self._config, self._in_window)

    def write(self, store: LeadStore, summary: LeadSummary, dedup: list[tuple[Any, ...]]) -> None:
        """Into the unit of work: dedup rows and facts, then the summary (`LeadStore.commit`
        produces summaries after everything else)."""
        self.settle()
        key, partition = self._key, self._partition
        for event_id, timestamp, properties, source in dedup:
            store.record_event(key, event_id, timestamp, properties, source, partition)
        for fact in self.writes.values():
            store.put_fact(key, fact, partition)
        store.put_summary(key, summary, partition)
        if not self._redo:  # a redo's facts may be among what a read remembered: read again
            added = [self.writes[event_id].timestamp for event_id in self._fresh]
            store.recent.extend(key, stamp_of(self._base), stamp_of(summary), added)
