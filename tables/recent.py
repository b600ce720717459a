"""Timestamps of each lead's recent events, kept between batches for the 24-hour velocity window.

The velocity of a lead (SPEC 4) counts its events of the last 24 hours. Counting them meant
scanning the lead's facts of that day at every batch that touched the lead and at every read of
it: for a lead that gets 100 events a second that is thousands of rows per batch, growing all
day (at 1,000 events/s over the benchmark's Zipf leads it was a tenth of the worker's time).

This cache keeps, per lead, the sorted timestamps of its facts after some point in time, valid
for one state of the lead: the summary's version, event count and last event (every write that
changes a lead's facts changes these). A batch that applies new events to a cached lead extends
the entry; the entry is pending with the store's unit of work and only counts once it is
committed (a failed batch is discarded with its writes). Bounded: least recently used leads are
dropped, and a lead with more recent events than `max_stamps` is counted by a scan instead.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Iterable

from core.lead import LeadSummary

__all__ = ["RecentEvents", "Stamp", "stamp_of"]

Stamp = tuple[int, int, int | None, str]


def stamp_of(summary: LeadSummary) -> Stamp:
    return (summary.version, summary.event_count, summary.last_timestamp, summary.last_event_id)


class RecentEvents:
    def __init__(self, max_leads: int = 50_000, max_stamps: int = 10_000) -> None:
        self.max_leads = max_leads
        self.max_stamps = max_stamps
        # lead key -> (stamp, after, sorted timestamps of its facts after `after`)
        self._settled: OrderedDict[bytes, tuple[Stamp, int, list[int]]] = OrderedDict()
        self._pending: dict[bytes, tuple[Stamp, int, list[int]]] = {}

    def count(self, key: bytes, stamp: Stamp, after: int, until: int) -> int | None:
        """Facts with `after < timestamp <= until` of the lead in state `stamp`, or None when
        not known here."""
        entry = self._pending.get(key)
        if entry is None:
            entry = self._settled.get(key)
            if entry is not None:
                self._settled.move_to_end(key)
        if entry is None or entry[0] != stamp or entry[1] > after:
            return None
        stamps = entry[2]
        gone = bisect_right(stamps, after)
        if gone > len(stamps) // 2 and key not in self._pending:  # the window moved on: prune
            stamps = stamps[gone:]
            self._settled[key] = (stamp, after, stamps)
            gone = 0
        return bisect_right(stamps, until) - gone

    def put(self, key: bytes, stamp: Stamp, after: int, stamps: list[int], pending: bool) -> None:
        """The timestamps after `after` of the lead in state `stamp`, as just read; `pending`
        when the read saw writes of the unit of work not committed yet."""
        if len(stamps) > self.max_stamps:
            self._pending.pop(key, None)
            self._settled.pop(key, None)
            return
        if pending:
            self._pending[key] = (stamp, after, stamps)
        else:
            self._remember(key, (stamp, after, stamps))

    def extend(self, key: bytes, before: Stamp, after_write: Stamp, added: Iterable[int]) -> None:
        """The lead went from state `before` to `after_write` by adding events at `added` (in
        the unit of work): its entry, if it has one for `before`, follows."""
        entry = self._pending.get(key) or self._settled.get(key)
        if entry is None or entry[0] != before:
            self._pending.pop(key, None)  # whatever it held no longer matches the lead
            return
        _, since, old = entry
        stamps = old[:]
        for timestamp in added:
            if timestamp > since:
                insort(stamps, timestamp)
        self.put(key, after_write, since, stamps, pending=True)

    def settle(self) -> None:
        """The unit of work is committed: its entries count from now on."""
        for key, entry in self._pending.items():
            self._remember(key, entry)
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()

    def _remember(self, key: bytes, entry: tuple[Stamp, int, list[int]]) -> None:
        self._settled[key] = entry
        self._settled.move_to_end(key)
        while len(self._settled) > self.max_leads:
            self._settled.popitem(last=False)
