"""The scoring table and `LeadStore`, the one place that knows how a lead is laid out in it.

One changelog-backed RocksDB table, `lead-state`, co-partitioned with the events topic (written
only from the scoring stream, so each write lands on the changelog partition of the record's
partition), with three kinds of key:

- ``S`` + lead key                         -> `LeadSummary` (fixed size) or `Alias`
- ``F`` + lead prefix + timestamp + eventId -> `EventFact` (one small row per event)
- ``E`` + lead prefix + eventId            -> (timestamp, properties, source): dedup

so the bytes written per in-order event do not depend on how many events the lead already has.

**One commit point** (`LeadStore.commit`). Writes go to a unit of work in memory, which every
read of the store sees; `commit` makes them durable in one step: the changelog records are
produced as aiokafka batches (facts and dedup rows first, summaries and aliases last), and only
once the broker has acknowledged all of them is the unit written to local RocksDB as one write
batch. So local state is never ahead of its changelog, and the changelog, written in order per
partition, holds a *prefix* of each unit: every summary is preceded by the facts it counts, and
carries the source offset it has applied, so a record reprocessed after a crash is recognised as
fully applied (redo only its outputs) or partly applied (redo it) — by scoring, merges, rebuilds
and rescores alike, since they all write through here. Faust's `Table` object still declares the
table: its changelog topic, recovery and standby replicas are Faust's (docs/adr/0011).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

from faust.types import TP, TableT
from rocksdict import WriteBatch

from app import faults
from app.batch_send import send_in_batches
from app.faust_app import app
from app.faust_patches import aiokafka_producer, note_changelog_offset, partition_db
from app.partitioning import partition_for
from app.settings import settings
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
from tables.recent import RecentEvents, stamp_of

__all__ = ["LeadStore", "lead_store", "leads_table", "owned_leads"]

_SUMMARY, _FACT, _EVENT = b"S", b"F", b"E"
log = logging.getLogger(__name__)


def _group(table_key: bytes) -> bytes:
    """The scan group of a table key: kind + lead prefix for facts and dedup rows (scans stay
    within one lead), the kind alone for summaries (scans go over a project or a partition)."""
    if table_key[:1] == _SUMMARY:
        return _SUMMARY
    return table_key[: 3 + int.from_bytes(table_key[1:3], "big")]


class LeadStore:
    """Reads and writes of leads' state; writes are pending until `commit` (see the module)."""

    def __init__(self, table: TableT, partitions: int = settings.partitions) -> None:
        self.table = table
        self.partitions = partitions
        # table key -> (partition, value or None for a delete), in write order
        self._pending: dict[bytes, tuple[int, bytes | None]] = {}
        self._groups: dict[bytes, set[bytes]] = {}  # `_group` -> its pending keys
        self.recent = RecentEvents()  # leads' recent timestamps: the velocity window

    # -- the unit of work --------------------------------------------------------------------
    def partition_of(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    def _write(self, table_key: bytes, value: bytes | None, partition: int) -> None:
        self._pending[table_key] = (partition, value)
        self._groups.setdefault(_group(table_key), set()).add(table_key)

    def _read(self, table_key: bytes, partition: int) -> bytes | None:
        pending = self._pending.get(table_key)
        if pending is not None:
            return pending[1]
        store: Any = self.table.data
        db = partition_db(store, partition)
        if db is None:
            value: bytes | None = store.data.get(table_key)
            return value
        return db.get(table_key)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def discard(self) -> None:
        """Forget the unit of work (a failed batch is redone from its records)."""
        self._pending.clear()
        self._groups.clear()
        self.recent.discard()

    async def commit(self) -> None:
        """Make the unit of work durable: changelog first (acknowledged), then local state."""
        if not self._pending:
            self.recent.settle()
            return
        pending, self._pending, self._groups = self._pending, {}, {}
        # facts and dedup rows first, summaries and aliases last: a prefix of the changelog
        # never holds a summary without the rows it counts
        records = [(p, k, v) for k, (p, v) in pending.items() if k[:1] != _SUMMARY]
        records += [(p, k, v) for k, (p, v) in pending.items() if k[:1] == _SUMMARY]
        topic = self.table.changelog_topic.get_topic_name()
        offsets = await send_in_batches(aiokafka_producer(app), topic, records)
        faults.inject("table-write")  # tests: a disk-full error after the changelog writes
        self._write_local(records)
        self.recent.settle()
        for partition, offset in offsets.items():
            note_changelog_offset(self.table, TP(topic, partition), offset)

    def _write_local(self, records: list[tuple[int, bytes, bytes | None]]) -> None:
        store: Any = self.table.data
        batches: dict[int, tuple[Any, Any]] = {}
        for partition, key, value in records:
            db = partition_db(store, partition)
            if db is None:  # memory:// (unit tests)
                if value is None:
                    store.data.pop(key, None)
                else:
                    store.data[key] = value
                continue
            if partition not in batches:
                batches[partition] = (db, WriteBatch(raw_mode=True))
            batch = batches[partition][1]
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for db, batch in batches.values():
            db.write(batch)  # atomic per partition

    # -- summary / alias ---------------------------------------------------------------------
    def get(self, key: bytes, partition: int | None = None) -> LeadSummary | Alias | None:
        raw = self._read(_SUMMARY + key, self.partition_of(key) if partition is None else partition)
        return None if raw is None else decode_lead(raw)

    def put_summary(self, key: bytes, summary: LeadSummary, partition: int | None = None) -> None:
        """Written last for a record: it marks the record as fully applied."""
        self._write(
            _SUMMARY + key,
            encode_summary(summary),
            self.partition_of(key) if partition is None else partition,
        )

    def put_alias(self, key: bytes, alias: Alias) -> None:
        self._write(_SUMMARY + key, encode_alias(alias), self.partition_of(key))

    def erase(self, key: bytes, partition: int) -> None:
        """Delete every row of the lead (erasure, ADR 0020): facts and events, then the summary
        or alias (the commit writes summaries last, so a crash part-way leaves a lead a redo
        erases again)."""
        for kind in (_FACT, _EVENT):
            prefix = kind + lead_prefix(key)
            doomed = []
            for k, _ in self._scan(partition, prefix, prefix):
                if not k.startswith(prefix):
                    break
                doomed.append(k)
            for k in doomed:
                self._write(k, None, partition)
        if self._read(_SUMMARY + key, partition) is not None:
            self._write(_SUMMARY + key, None, partition)

    # -- dedup -------------------------------------------------------------------------------
    def event_source(
        self, key: bytes, event_id: str, partition: int | None = None
    ) -> tuple[bool, Source | None]:
        """(known, the record that added it)."""
        raw = self._read(
            _EVENT + event_id_key(key, event_id),
            self.partition_of(key) if partition is None else partition,
        )
        if raw is None:
            return False, None
        return True, decode_event_record(raw)[2]

    def has_event(self, key: bytes, event_id: str, *, unless_from: Source | None = None) -> bool:
        """Known, except when added by `unless_from` (that record is being redone)."""
        known, source = self.event_source(key, event_id)
        return known and (unless_from is None or source != unless_from)

    def event_record(
        self, key: bytes, event_id: str, partition: int | None = None
    ) -> tuple[int, Any] | None:
        raw = self._read(
            _EVENT + event_id_key(key, event_id),
            self.partition_of(key) if partition is None else partition,
        )
        if raw is None:
            return None
        ts, properties, _ = decode_event_record(raw)
        return ts, properties

    def record_event(
        self,
        key: bytes,
        event_id: str,
        timestamp: int,
        properties: Any,
        source: Source | None,
        partition: int | None = None,
    ) -> None:
        self._write(
            _EVENT + event_id_key(key, event_id),
            encode_event_record(timestamp, properties, source),
            self.partition_of(key) if partition is None else partition,
        )

    # -- ordered facts -----------------------------------------------------------------------
    def put_fact(self, key: bytes, fact: EventFact, partition: int | None = None) -> None:
        self._write(
            _FACT + fact_key(key, fact.timestamp, fact.event_id),
            encode_fact(fact),
            self.partition_of(key) if partition is None else partition,
        )

    def predecessor(
        self, key: bytes, partition: int, timestamp: int, event_id: str
    ) -> EventFact | None:
        """The fact just before (timestamp, eventId), which itself is not stored yet."""
        return next(self.facts_before(key, partition, timestamp, event_id), None)

    def facts_before(
        self, key: bytes, partition: int, timestamp: int, event_id: str
    ) -> Iterator[EventFact]:
        """Facts before (timestamp, eventId), latest first."""
        prefix = _FACT + lead_prefix(key)
        target = _FACT + fact_key(key, timestamp, event_id)
        for k, v in self._scan(partition, target, prefix, backwards=True):
            if not k.startswith(prefix):
                return
            if k < target:
                yield decode_fact(k, v, len(prefix))

    def facts_from(
        self, key: bytes, partition: int, timestamp: int, event_id: str = ""
    ) -> Iterator[EventFact]:
        """Facts at or after (timestamp, eventId), in chain order."""
        prefix = _FACT + lead_prefix(key)
        for k, v in self._scan(partition, _FACT + fact_key(key, timestamp, event_id), prefix):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

    def all_facts(self, key: bytes, partition: int) -> Iterator[EventFact]:
        prefix = _FACT + lead_prefix(key)
        for k, v in self._scan(partition, prefix, prefix):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

    def view_at(
        self, key: bytes, partition: int, summary: LeadSummary, config: ScoringConfig, now: int
    ) -> LeadView:
        """The lead as users see it at `now`: decayed score, stage, 24-hour velocity."""
        recent = self.count_recent(key, partition, summary, now - VELOCITY_WINDOW_US, now)
        return lead_view(summary, now, config, recent)

    def count_recent(
        self, key: bytes, partition: int, summary: LeadSummary, after: int, until: int
    ) -> int:
        """`count_in_window` for the lead in the state of `summary`, from `recent` when it
        knows the lead in that state (then no rows are read)."""
        stamp = stamp_of(summary)
        known = self.recent.count(key, stamp, after, until)
        if known is not None:
            return known
        stamps = [fact.timestamp for fact in self.facts_from(key, partition, after + 1)]
        pending = _SUMMARY + key in self._pending or _FACT + lead_prefix(key) in self._groups
        self.recent.put(key, stamp, after, stamps, pending=pending)
        return bisect_right(stamps, until)

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
        for key, raw in self._scan(partition, start, _SUMMARY):
            if not key.startswith(prefix):
                return
            yield key[1:], decode_lead(raw)

    def states(
        self, partition: int, *, skip_unreadable: bool = False
    ) -> Iterator[tuple[bytes, LeadSummary | Alias]]:
        """Every summary and alias of a partition; with `skip_unreadable`, an entry that does not
        decode is logged and passed over instead of ending the walk for every other lead."""
        for key, raw in self._scan(partition, _SUMMARY, _SUMMARY):
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
        self, partition: int, start: bytes, group: bytes, *, backwards: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys from `start` on (or down from it), local state merged with the unit of work's
        pending writes of `group` (see `_group`); callers stop at the end of their prefix."""
        stored = self._scan_stored(partition, start, backwards)
        keys = self._groups.get(group)
        if not keys:
            yield from stored
            return
        if backwards:
            mine = sorted((k for k in keys if k <= start), reverse=True)
        else:
            mine = sorted(k for k in keys if k >= start)
        mine = [k for k in mine if self._pending[k][0] == partition]
        yield from _merge(stored, [(k, self._pending[k][1]) for k in mine], backwards)

    def _scan_stored(
        self, partition: int, start: bytes, backwards: bool
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


def _merge(
    stored: Iterator[tuple[bytes, bytes]],
    pending: list[tuple[bytes, bytes | None]],
    backwards: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """Two key-ordered runs as one; a pending write replaces the stored value, a pending
    delete (None) hides it."""
    before = (lambda a, b: a > b) if backwards else (lambda a, b: a < b)
    mine = iter(pending)
    head = next(mine, None)
    for key, value in stored:
        while head is not None and before(head[0], key):
            if head[1] is not None:
                yield head[0], head[1]
            head = next(mine, None)
        if head is not None and head[0] == key:
            if head[1] is not None:
                yield head[0], head[1]
            head = next(mine, None)
            continue
        yield key, value
    while head is not None:
        if head[1] is not None:
            yield head[0], head[1]
        head = next(mine, None)


lead_store = LeadStore(leads_table)


def owned_leads(store: LeadStore = lead_store) -> Iterator[tuple[int, bytes, LeadSummary]]:
    """Every canonical lead of the partitions this worker actively owns (for the decay sweep)."""
    topic = store.table.changelog_topic.get_topic_name()
    for tp in sorted(app.assignor.assigned_actives()):
        if tp.topic == topic:
            for key, state in store.states(tp.partition, skip_unreadable=True):
                if isinstance(state, LeadSummary):
                    yield tp.partition, key, state
