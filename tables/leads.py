"""The scoring table and `LeadStore`, the one place that knows how a lead is laid out in it.

One changelog-backed RocksDB table, `lead-state`, co-partitioned with the events topic (written
only from the scoring stream, so each write lands on the changelog partition of the record's
partition), with three kinds of key:

- ``S`` + lead key                         -> `LeadSummary` (fixed size) or `Alias`
- ``F`` + lead prefix + timestamp + eventId -> `EventFact` (one small row per event)
- ``E`` + lead prefix + eventId            -> (timestamp, properties, source): dedup

so the bytes written per in-order event do not depend on how many events the lead already has.
One table means one changelog partition per lead, written in order: a worker killed mid-record
has delivered a *prefix* of that record's writes. The summary is written last and carries the
source offset it has applied, so a record reprocessed after a crash is recognised as fully
applied (redo only its outputs) or partly applied (redo it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from faust.types import TableT

from app import faults
from app.faust_app import app
from app.faust_patches import partition_db
from app.topology import leads_table  # declared with the whole topology
from core.config import ScoringConfig
from core.lead import EventFact, LeadSummary, LeadView, lead_view
from core.scoring import VELOCITY_WINDOW_US
from tables.codec import (
    Alias,
    Source,
    decode_event_record,
    decode_fact,
    decode_lead,
    encode_alias,
    encode_event_record,
    encode_fact,
    encode_summary,
    event_id_key,
    fact_key,
    lead_prefix,
)

__all__ = ["LeadStore", "lead_store", "leads_table", "owned_leads"]

_SUMMARY, _FACT, _EVENT = b"S", b"F", b"E"
log = logging.getLogger(__name__)


class LeadStore:
    """Reads and writes of one lead's state; writes must happen inside the scoring stream."""

    def __init__(self, table: TableT) -> None:
        self.table = table

    # -- summary / alias ---------------------------------------------------------------------
    def get(self, key: bytes) -> LeadSummary | Alias | None:
        raw = self.table.get(_SUMMARY + key)
        return None if raw is None else decode_lead(raw)

    def put_summary(self, key: bytes, summary: LeadSummary) -> None:
        """Written last for a record: it marks the record as fully applied."""
        faults.inject("table-write")  # tests: a disk-full error after the record's other writes
        self.table[_SUMMARY + key] = encode_summary(summary)

    def put_alias(self, key: bytes, alias: Alias) -> None:
        self.table[_SUMMARY + key] = encode_alias(alias)

    def erase(self, key: bytes, partition: int) -> None:
        """Delete every row of the lead (erasure, ADR 0020): facts and events first, the
        summary or alias last, so a crash part-way leaves a lead a redo erases again."""
        for kind in (_FACT, _EVENT):
            prefix = kind + lead_prefix(key)
            doomed = []
            for k, _ in self._scan(partition, prefix):
                if not k.startswith(prefix):
                    break
                doomed.append(k)
            for k in doomed:
                del self.table[k]
        if self.table.get(_SUMMARY + key) is not None:
            del self.table[_SUMMARY + key]

    # -- dedup -------------------------------------------------------------------------------
    def event_source(self, key: bytes, event_id: str) -> tuple[bool, Source | None]:
        """(known, the record that added it)."""
        raw = self.table.get(_EVENT + event_id_key(key, event_id))
        if raw is None:
            return False, None
        return True, decode_event_record(raw)[2]

    def has_event(self, key: bytes, event_id: str, *, unless_from: Source | None = None) -> bool:
        """Known, except when added by `unless_from` (that record is being redone)."""
        known, source = self.event_source(key, event_id)
        return known and (unless_from is None or source != unless_from)

    def event_record(self, key: bytes, event_id: str) -> tuple[int, Any] | None:
        raw = self.table.get(_EVENT + event_id_key(key, event_id))
        if raw is None:
            return None
        ts, properties, _ = decode_event_record(raw)
        return ts, properties

    def record_event(
        self, key: bytes, event_id: str, timestamp: int, properties: Any, source: Source | None
    ) -> None:
        self.table[_EVENT + event_id_key(key, event_id)] = encode_event_record(
            timestamp, properties, source
        )

    # -- ordered facts -----------------------------------------------------------------------
    def put_fact(self, key: bytes, fact: EventFact) -> None:
        self.table[_FACT + fact_key(key, fact.timestamp, fact.event_id)] = encode_fact(fact)

    def predecessor(
        self, key: bytes, partition: int, timestamp: int, event_id: str
    ) -> EventFact | None:
        """The fact just before (timestamp, eventId), which itself is not stored yet."""
        prefix = _FACT + lead_prefix(key)
        target = _FACT + fact_key(key, timestamp, event_id)
        for k, v in self._scan(partition, target, backwards=True):
            if not k.startswith(prefix):
                return None
            if k < target:
                return decode_fact(k, v, len(prefix))
        return None

    def facts_from(
        self, key: bytes, partition: int, timestamp: int, event_id: str = ""
    ) -> Iterator[EventFact]:
        """Facts at or after (timestamp, eventId), in chain order."""
        prefix = _FACT + lead_prefix(key)
        for k, v in self._scan(partition, _FACT + fact_key(key, timestamp, event_id)):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

    def all_facts(self, key: bytes, partition: int) -> Iterator[EventFact]:
        prefix = _FACT + lead_prefix(key)
        for k, v in self._scan(partition, prefix):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

    def view_at(
        self, key: bytes, partition: int, summary: LeadSummary, config: ScoringConfig, now: int
    ) -> LeadView:
        """The lead as users see it at `now`: decayed score, stage, 24-hour velocity."""
        recent = self.count_in_window(key, partition, now - VELOCITY_WINDOW_US, now)
        return lead_view(summary, now, config, recent)

    def count_in_window(self, key: bytes, partition: int, after: int, until: int) -> int:
        """Events with `after < timestamp <= until`."""
        n = 0
        for fact in self.facts_from(key, partition, after + 1):
            if fact.timestamp > until:
                break
            n += 1
        return n

    def leads_of_project(
        self, project_id: str, partition: int
    ) -> Iterator[tuple[bytes, LeadSummary]]:
        """Canonical leads of one project in one partition (keys start with "{projectId}:")."""
        for key, state in self.states_of_project(project_id, partition):
            if isinstance(state, LeadSummary):
                yield key, state

    def states_of_project(
        self, project_id: str, partition: int, after: str | None = None
    ) -> Iterator[tuple[bytes, LeadSummary | Alias]]:
        """Summaries and aliases of one project in one partition, with their lead keys, in
        lead-key order (from the first key after `after`, when given)."""
        prefix = _SUMMARY + f"{project_id}:".encode()
        start = prefix if after is None else prefix + after.encode() + b"\x00"
        for key, raw in self._scan(partition, start):
            if not key.startswith(prefix):
                return
            yield key[1:], decode_lead(raw)

    def states(
        self, partition: int, *, skip_unreadable: bool = False
    ) -> Iterator[tuple[bytes, LeadSummary | Alias]]:
        """Every summary and alias of a partition; with `skip_unreadable`, an entry that does not
        decode is logged and passed over instead of ending the walk for every other lead."""
        for key, raw in self._scan(partition, _SUMMARY):
            if not key.startswith(_SUMMARY):
                return
            try:
                state = decode_lead(raw)
            except (ValueError, TypeError, KeyError, IndexError):
                if not skip_unreadable:
                    raise
                log.exception("lead %r: unreadable table entry skipped", key[1:])
                continue
            yield key[1:], state

    def aliases_of_project(self, project_id: str, partition: int) -> Iterator[tuple[str, Alias]]:
        for key, state in self.states_of_project(project_id, partition):
            if isinstance(state, Alias):
                yield key.decode(), state

    def _scan(
        self, partition: int, start: bytes, *, backwards: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        store: Any = self.table.data
        db = partition_db(store, partition)
        if db is not None:  # rocksdb:// — a real range scan
            yield from db.items(from_key=start, backwards=backwards)
            return
        # memory:// (unit tests): same order, by sorting
        keys = sorted(store.data, reverse=backwards)
        for k in keys:
            if (k >= start) if not backwards else (k <= start):
                yield k, store.data[k]


lead_store = LeadStore(leads_table)


def owned_leads(store: LeadStore = lead_store) -> Iterator[tuple[int, bytes, LeadSummary]]:
    """Every canonical lead of the partitions this worker actively owns (for the decay sweep)."""
    topic = store.table.changelog_topic.get_topic_name()
    for tp in sorted(app.assignor.assigned_actives()):
        if tp.topic == topic:
            for key, state in store.states(tp.partition, skip_unreadable=True):
                if isinstance(state, LeadSummary):
                    yield tp.partition, key, state
