"""The scoring tables and `LeadStore`, the one place that knows how a lead is laid out in them.

Three changelog-backed RocksDB tables, all co-partitioned with the events topic (they are written
only from the scoring stream, so each write lands on the changelog partition of the event's
partition):

- `leads`:      table key -> `LeadSummary` (fixed size) or `Alias` (merged-away key)
- `lead-facts`: lead prefix + timestamp + eventId -> `EventFact` (one small row per event)
- `event-ids`:  lead prefix + eventId -> (timestamp, properties): dedup, written once per event

so the bytes written per in-order event do not depend on how many events the lead already has.
Keys are raw bytes (`key_type=bytes`), so the `leads` table hashes a key exactly like the events
topic does and `table_route` finds the owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.types import TableT

from app.faust_app import app
from app.settings import settings
from core.lead import EventFact, LeadSummary
from tables.codec import (
    Alias,
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

__all__ = ["LeadStore", "event_ids_table", "facts_table", "lead_store", "leads_table"]

_ROCKSDB_OPTIONS = {
    "block_cache_size": 16 * 1024 * 1024,
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
}


def _table(name: str, help_text: str) -> TableT:
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=_ROCKSDB_OPTIONS,
        help=help_text,
    )


leads_table = _table("leads", "lead key -> LeadSummary or Alias")
facts_table = _table("lead-facts", "lead + timestamp + eventId -> EventFact")
event_ids_table = _table("event-ids", "lead + eventId -> (timestamp, properties)")


class LeadStore:
    """Reads and writes of one lead's state; writes must happen inside the scoring stream."""

    def __init__(self, leads: TableT, facts: TableT, event_ids: TableT) -> None:
        self.leads = leads
        self.facts = facts
        self.event_ids = event_ids

    # -- summary / alias ---------------------------------------------------------------------
    def get(self, key: bytes) -> LeadSummary | Alias | None:
        raw = self.leads.get(key)
        return None if raw is None else decode_lead(raw)

    def put_summary(self, key: bytes, summary: LeadSummary) -> None:
        self.leads[key] = encode_summary(summary)

    def put_alias(self, key: bytes, canonical: str) -> None:
        self.leads[key] = encode_alias(canonical)

    # -- dedup -------------------------------------------------------------------------------
    def has_event(self, key: bytes, event_id: str) -> bool:
        return self.event_ids.get(event_id_key(key, event_id)) is not None

    def event_record(self, key: bytes, event_id: str) -> tuple[int, Any] | None:
        raw = self.event_ids.get(event_id_key(key, event_id))
        return None if raw is None else decode_event_record(raw)

    def record_event(self, key: bytes, event_id: str, timestamp: int, properties: Any) -> None:
        self.event_ids[event_id_key(key, event_id)] = encode_event_record(timestamp, properties)

    # -- ordered facts -----------------------------------------------------------------------
    def put_fact(self, key: bytes, fact: EventFact) -> None:
        self.facts[fact_key(key, fact.timestamp, fact.event_id)] = encode_fact(fact)

    def predecessor(
        self, key: bytes, partition: int, timestamp: int, event_id: str
    ) -> EventFact | None:
        """The fact just before (timestamp, eventId), which itself is not stored yet."""
        prefix = lead_prefix(key)
        target = fact_key(key, timestamp, event_id)
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
        prefix = lead_prefix(key)
        for k, v in self._scan(partition, fact_key(key, timestamp, event_id)):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

    def all_facts(self, key: bytes, partition: int) -> Iterator[EventFact]:
        prefix = lead_prefix(key)
        for k, v in self._scan(partition, prefix):
            if not k.startswith(prefix):
                return
            yield decode_fact(k, v, len(prefix))

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
        prefix = f"{project_id}:".encode()
        data: Any = self.leads.data
        db_for_partition = getattr(data, "_db_for_partition", None)
        items = (
            db_for_partition(partition).items(from_key=prefix)
            if db_for_partition is not None
            else sorted((k, v) for k, v in data.data.items() if k >= prefix)
        )
        for key, raw in items:
            if not key.startswith(prefix):
                return
            state = decode_lead(raw)
            if isinstance(state, LeadSummary):
                yield key, state

    def aliases_of_project(self, project_id: str, partition: int) -> Iterator[tuple[str, Alias]]:
        prefix = f"{project_id}:".encode()
        data: Any = self.leads.data
        for key, raw in data._db_for_partition(partition).items(from_key=prefix):
            if not key.startswith(prefix):
                return
            state = decode_lead(raw)
            if isinstance(state, Alias):
                yield key.decode(), state

    def _scan(
        self, partition: int, start: bytes, *, backwards: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        store: Any = self.facts.data
        db_for_partition = getattr(store, "_db_for_partition", None)
        if db_for_partition is not None:  # rocksdb:// — a real range scan
            yield from db_for_partition(partition).items(from_key=start, backwards=backwards)
            return
        # memory:// (unit tests): same order, by sorting
        keys = sorted(store.data, reverse=backwards)
        for k in keys:
            if (k >= start) if not backwards else (k <= start):
                yield k, store.data[k]


lead_store = LeadStore(leads_table, facts_table, event_ids_table)


def owned_leads(store: LeadStore = lead_store) -> Iterator[tuple[int, bytes, LeadSummary]]:
    """Every canonical lead of the partitions this worker actively owns (for the decay sweep)."""
    actives = app.assignor.assigned_actives()
    topic = store.leads.changelog_topic.get_topic_name()
    data: Any = store.leads.data
    for tp in sorted(actives):
        if tp.topic != topic:
            continue
        for key, raw in data._db_for_partition(tp.partition).items():
            if key == data.offset_key:
                continue
            state = decode_lead(raw)
            if isinstance(state, LeadSummary):
                yield tp.partition, key, state
