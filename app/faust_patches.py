"""Fixes to Faust 0.15.3 that at-least-once processing depends on (docs/adr/0011, 0012).

1. **Flush before commit.** Before committing offsets, Faust flushes its producer:
   `ProducerBuffer.flush()` drains the buffer of table-changelog writes (`send_soon`), then
   aiokafka's own buffer. But the buffer's `flush_atmost(None)` returns as soon as no message
   was sent within 0.1 s, and the message its background task is handing to aiokafka is counted
   nowhere. Under backpressure the flush returned with changelog writes still queued, their
   records' offsets were committed, and a worker killed then lost those writes. `flush()` here
   waits until every message queued or in flight when it was called has been handed on (4).

2. **A position for every assigned partition.** After a rebalance Faust resumes the stream
   partitions, seeks them "to committed", then resumes flow, which clears every stream buffer.
   Records fetched in between are dropped on the promise that the seek re-reads them, but
   aiokafka's `seek_to_committed` seeks only where the committed offset is > 0: a partition of
   a new consumer group (first start, a replay's new epoch, a worker killed before its first
   commit) kept the position of the dropped records, and they were never scored. Partitions
   without a committed offset now seek to the log start, as `auto_offset_reset="earliest"` says.

3. **Acks belong to one generation.** A record of an earlier generation (skipped, or finished
   while partitions were revoked) was still acked into the offsets the next generation commits,
   so a commit could pass records the new owner had not processed. Acks of an earlier
   generation are dropped, and a partition starts each assignment with no acks.

4. **Waiting for the buffer without a wake-up per message** (a speed-up, not a fix). Faust's
   flush, and its back-pressure wait when more than `max_messages` are queued, wake on every
   message handed to aiokafka (an `asyncio.wait_for` each: ~9 % of the worker's CPU in a
   replay). The buffer hands messages on in order, one at a time, so "everything queued now is
   sent" is a count: the patched waits sleep until that many messages are through.

5. **Persisted changelog offsets once per commit** (a speed-up, not a fix). Faust writes the
   offset of every delivered changelog message into RocksDB, about 5 % of the worker's CPU.
   That offset only tells recovery where local state ends: after a crash local state is
   discarded anyway (`tables/local_state.py`), and after a clean stop an older offset merely
   re-applies a little more of the changelog over identical values. So the newest offset per
   partition is kept in memory and written after each commit and when the table stops.

6. **Seek with delivery stopped.** After restoring tables Faust resumes the stream partitions
   with flow already running (it ran to read the changelogs), seeks them "to committed", then
   clears the stream buffers. Records fetched between the seek and the clear were buffered,
   set the read offset past themselves and were cleared; re-fetched, they fell below that read
   offset and were dropped as already seen. Never processed, they stalled the commit, or — one
   record at the head, which Faust's gap check lets through — were skipped for good. Flow is
   now stopped before such a seek, so nothing fetched from the new positions is delivered
   before the clear (docs/adr/0012).

7. **A record delivered without four tasks** (a speed-up, not a fix). Faust's fetch loop hands
   each record to the streams with `wait_first(delivery, suspend_flow.wait())`: four tasks, an
   `asyncio.wait` and three cancellations per record, about a third of Faust's per-record cost
   (docs/PERFORMANCE.md, (1b)). While flow is running the delivery is now awaited directly; when
   flow is suspended, or the consumer stopping, Faust's own `wait_first` runs as before. The one
   difference: a delivery already under way when a rebalance suspends flow completes instead of
   being cancelled — a record delivered twice is recognised by the scoring path (applied
   offsets, its own dedup rows: ADR 0025), and acks of an earlier generation are dropped (3).

8. **Fetches that wait 100 ms, not 1.5 s** (latency and throughput, not correctness). Faust
   builds the worker's consumer with `fetch_max_wait_ms=1500`, fixed. aiokafka keeps one fetch
   in flight per broker, and leaves out of it the partitions whose fetched records are still
   being processed; when the fetch in flight holds only partitions without new records, the
   broker holds it for the full wait, and the busy partitions cannot be fetched again until it
   returns. Draining a filled topic, a run of the bench stalled 1.5 s at the end of a partition
   (14,600/s instead of 104,000/s in one of three pass-through runs with that wait, none with
   50 ms); under live traffic the same stall delays events behind idle topics. The wait is
   `LEADSCORE_FETCH_MAX_WAIT_MS` (100 ms by default): an idle worker then sends ten small
   fetch requests a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import inspect
from collections.abc import Mapping, Set
from typing import Any

import faust
from faust.tables.base import Collection
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode.services import Service, WaitResults

__all__ = [
    "FAUST_VERSION",
    "PATCH_TARGETS",
    "UnsupportedFaust",
    "aiokafka_producer",
    "apply",
    "changed_targets",
    "check_faust_version",
    "note_changelog_offset",
    "partition_db",
    "source_digest",
    "unsent_messages",
]

# The one Faust release these patches were written against and traced on (ADR 0011, 0012).
# pyproject.toml pins it; `apply()` refuses any other, because a patch that silently stops
# matching its target would bring back lost or doubled records without any error.
FAUST_VERSION = "0.15.3"

# For each patch: the Faust (or aiokafka) code it replaces or relies on, with the SHA-256
# prefix of that code's source as it was when the patch was written. A unit test recomputes
# them (tests/unit/test_faust_patches.py): any change in a target fails it, naming the patch
# to re-check.
PATCH_TARGETS: Mapping[int, tuple[tuple[str, str], ...]] = {
    1: (
        ("faust.transport.producer:ProducerBuffer.flush", "26fbebb124ad9c98"),
        ("faust.transport.producer:ProducerBuffer._send_pending", "4a9d5f932b56bc68"),
    ),
    2: (
        (
            "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek_to_committed",
            "775ab0adc4b052ab",
        ),
        ("aiokafka.consumer.consumer:AIOKafkaConsumer.seek_to_committed", "f6cd85c8b70a4ccf"),
    ),
    3: (
        ("faust.transport.consumer:Consumer.ack", "5fcf41cf45153475"),
        ("faust.transport.consumer:Consumer.on_partitions_assigned", "29ce96596f05a18c"),
        ("faust.transport.consumer:Consumer._new_offset", "1d2c7ea89a7ad4f1"),
    ),
    4: (
        ("faust.transport.producer:ProducerBuffer.wait_until_ebb", "758dd5744044071b"),
        ("faust.transport.producer:ProducerBuffer._send_pending", "4a9d5f932b56bc68"),
    ),
    5: (
        ("faust.tables.base:Collection._on_changelog_sent", "60122c86a120d82c"),
        ("faust.tables.manager:TableManager.on_commit", "2aef0784a10ffc01"),
        ("faust.tables.base:Collection.on_stop", "b01e5bb117855e6b"),
        ("faust.stores.rocksdb:Store.set_persisted_offset", "b4c811926678346e"),
    ),
    6: (
        ("faust.transport.consumer:Consumer.perform_seek", "0e8c130ff4b0afd8"),
        ("faust.tables.recovery:Recovery.on_recovery_completed", "6ef567acf072e46d"),
        ("faust.tables.recovery:Recovery._resume_streams", "d986a6710c1aca98"),
    ),
    7: (
        ("faust.transport.consumer:Consumer._drain_messages", "44a2500309e83c63"),
        ("mode.services:Service.wait_first", "feade6a31f8a6789"),
    ),
    8: (
        (
            "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer",
            "c2701bfc3e6f6cad",
        ),
        # the wait is read from the consumer when it starts, for its fetcher
        ("aiokafka.consumer.consumer:AIOKafkaConsumer.start", "2f1ba70443327538"),
        # one fetch in flight per broker, busy partitions left out of it
        ("aiokafka.consumer.fetcher:Fetcher._get_actions_per_node", "1dab2cf937d165d0"),
    ),
}


class UnsupportedFaust(RuntimeError):
    """The installed Faust is not the release the patches were written for."""


def check_faust_version(installed: str = faust.__version__) -> None:
    if installed != FAUST_VERSION:
        raise UnsupportedFaust(
            f"leadscore's Faust patches target faust-streaming {FAUST_VERSION}, found "
            f"{installed}: re-check every patch in app/faust_patches.py (their targets are "
            "listed in PATCH_TARGETS) before changing the pin"
        )


def _owner_and_name(target: str) -> tuple[Any, str]:
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def source_digest(target: str) -> str:
    """SHA-256 prefix of the installed source of `module:Class.attr` — of the original when
    `apply()` has replaced it."""
    owner, name = _owner_and_name(target)
    code = _ORIGINALS.get((owner, name)) or inspect.getattr_static(owner, name)
    return hashlib.sha256(inspect.getsource(code).encode()).hexdigest()[:16]


def changed_targets() -> list[str]:
    """`"patch N: target"` for every target whose source differs from the recorded one."""
    changed = []
    for number, targets in PATCH_TARGETS.items():
        for target, digest in targets:
            if source_digest(target) != digest:
                changed.append(f"patch {number}: {target}")
    return changed


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's producer (for batch sends that bypass Faust's
    per-message machinery); started on first use, like Faust does."""
    return app.producer._ensure_producer()


def partition_db(store: Any, partition: int) -> Any | None:
    """The RocksDB database of one table partition (for range scans), or None when the table
    is not on rocksdb:// (the memory store of unit tests)."""
    db_for_partition = getattr(store, "_db_for_partition", None)
    return None if db_for_partition is None else db_for_partition(partition)


_INFLIGHT = "_leadscore_inflight"
_UNPERSISTED = "_leadscore_unpersisted_offsets"
_SENT = "_leadscore_sent"
_WAITERS = "_leadscore_waiters"
_YIELD_EVERY = 32
_TURNS_TO_SEE_THE_STOP = 5


async def _send_pending(self: Any, fut: Any, _original: Any = ProducerBuffer._send_pending) -> None:
    setattr(self, _INFLIGHT, getattr(self, _INFLIGHT, 0) + 1)
    try:
        await _original(self, fut)
    finally:
        setattr(self, _INFLIGHT, getattr(self, _INFLIGHT) - 1)
    sent = getattr(self, _SENT, 0) + 1
    setattr(self, _SENT, sent)
    waiters: list[tuple[int, asyncio.Future[None]]] = self.__dict__.get(_WAITERS, [])
    for target, waiter in waiters:
        if sent >= target and not waiter.done():
            waiter.set_result(None)
    # Handing a message to aiokafka rarely suspends, so the buffer's task would drain a long
    # queue in one go and hold the event loop (HTTP requests) for hundreds of milliseconds.
    if sent % _YIELD_EVERY == 0:
        await asyncio.sleep(0)


async def _sent_through(buffer: Any, target: int) -> bool:
    """Wait until the buffer has handed `target` messages in all to aiokafka; False when it
    stops first. The buffer's one task sends in queue order, so this covers every message
    queued when the target was taken."""
    waiters: list[tuple[int, asyncio.Future[None]]] = buffer.__dict__.setdefault(_WAITERS, [])
    while getattr(buffer, _SENT, 0) < target:
        if buffer.should_stop or buffer.state != "running":
            return False
        entry = (target, asyncio.get_running_loop().create_future())
        waiters.append(entry)
        try:
            await asyncio.wait({entry[1]}, timeout=0.1)  # re-check the state now and then
        finally:
            waiters.remove(entry)
    return True


def _sent_after_queue(buffer: Any) -> int:
    return getattr(buffer, _SENT, 0) + unsent_messages(buffer)


async def _flush(self: Any, _original: Any = ProducerBuffer.flush) -> None:
    if not await _sent_through(self, _sent_after_queue(self)):
        await _original(self)  # shutting down: Faust's own behaviour


async def _wait_until_ebb(self: Any) -> None:
    """Back-pressure: when more than `max_messages` are queued, wait until half are through."""
    if self.size > self.max_messages:
        await _sent_through(self, _sent_after_queue(self) - self.max_messages // 2)


async def _seek_to_committed(self: Any) -> Mapping[TP, int | None]:
    consumer = self._ensure_consumer()
    committed: Mapping[TP, int | None] = await self.call_thread(consumer.seek_to_committed)
    never_committed = [tp for tp, offset in committed.items() if not offset]
    if never_committed:
        await self.call_thread(consumer.seek_to_beginning, *never_committed)
    return committed


async def _perform_seek(self: Any, _original: Any = Consumer.perform_seek) -> None:
    """Seek with delivery stopped (6). Every caller clears the stream buffers and resumes flow
    right after, so records fetched from the new positions are delivered only after that."""
    if self.flow_active:
        self.stop_flow()
        # Let the fetch loop see the stop first: a record it is handing on is abandoned and its
        # read offset recorded before the seek resets the read offsets, not after (a stale, higher
        # read offset would drop the re-fetched records below it). That takes three turns of
        # the event loop; the seek's own round trip to the consumer thread adds more.
        for _ in range(_TURNS_TO_SEE_THE_STOP):
            await asyncio.sleep(0)
    await _original(self)


def _ack(self: Any, message: Any, _original: Any = Consumer.ack) -> bool:
    added: bool = _original(self, message)
    if added and message.generation_id != self.app.consumer_generation_id:
        tp, offset = message.tp, message.offset
        self._acked_index[tp].discard(offset)
        with contextlib.suppress(ValueError):
            self._acked[tp].remove(offset)
        return False
    return added


async def _on_partitions_assigned(
    self: Any,
    assigned: Set[TP],
    generation_id: int = 0,
    _original: Any = Consumer.on_partitions_assigned,
) -> None:
    for tp in assigned:
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
    await _original(self, assigned, generation_id)


def _remember_changelog_offset(
    self: Any, fut: Any, _original: Any = Collection._on_changelog_sent
) -> None:
    if self.app.in_transaction:
        _original(self, fut)
        return
    sent = fut.result()
    unpersisted: dict[TP, int] = self.__dict__.setdefault(_UNPERSISTED, {})
    tp = sent.topic_partition
    if unpersisted.get(tp, -1) < sent.offset:
        unpersisted[tp] = sent.offset


def note_changelog_offset(table: Any, tp: TP, offset: int) -> None:
    """Remember a changelog offset the caller produced and wrote to local state itself (the
    scoring path's batched commit, `tables.leads.LeadStore.commit`): persisted like Faust's
    own changelog writes, after each commit and when the table stops (patch 5)."""
    unpersisted: dict[TP, int] = table.__dict__.setdefault(_UNPERSISTED, {})
    if unpersisted.get(tp, -1) < offset:
        unpersisted[tp] = offset


_FLOW_WAIT = asyncio.Event.wait.__code__  # the code of `Consumer.suspend_flow.wait()` coroutines


async def _wait_first(
    self: Any, *coros: Any, timeout: Any = None, _original: Any = Service.wait_first
) -> Any:
    """Patch 7: the fetch loop's `wait_first(delivery, suspend_flow.wait())`, awaited directly
    while flow runs."""
    if (
        len(coros) == 2
        and timeout is None
        and inspect.iscoroutine(coros[0])
        and inspect.iscoroutine(coros[1])
        and coros[1].cr_code is _FLOW_WAIT
        and not self.suspend_flow.is_set()
        and not self._stopped.is_set()
        and not self._crashed.is_set()
    ):
        coros[1].close()  # never started: nothing to cancel
        result = await coros[0]
        return WaitResults([coros[0]], [result], False)
    return await _original(self, *coros, timeout=timeout)


def _persist_changelog_offsets(table: Any) -> None:
    unpersisted: dict[TP, int] = table.__dict__.get(_UNPERSISTED, {})
    while unpersisted:
        tp, offset = unpersisted.popitem()
        table.data.set_persisted_offset(tp, offset)


def _on_commit(self: Any, offsets: Any, _original: Any = TableManager.on_commit) -> None:
    _original(self, offsets)
    for table in self.values():
        _persist_changelog_offsets(table)


async def _table_on_stop(self: Any) -> None:
    _persist_changelog_offsets(self)  # before the store (a child service) closes


def unsent_messages(buffer: Any) -> int:
    """Messages (table-changelog writes) queued in, or being handed on by, a ProducerBuffer."""
    return int(buffer.size) + int(getattr(buffer, _INFLIGHT, 0))


_fetch_max_wait_ms = 100  # set by `apply`


def _create_worker_consumer(
    self: Any, transport: Any, _original: Any = AIOKafkaConsumerThread._create_worker_consumer
) -> Any:
    consumer = _original(self, transport)
    consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # read by `start()`, not yet called
    return consumer


# (class, attribute, replacement), in the order of the docstring's numbers.
_REPLACEMENTS: tuple[tuple[Any, str, Any], ...] = (
    (ProducerBuffer, "_send_pending", _send_pending),  # 1, 4
    (ProducerBuffer, "flush", _flush),  # 1
    (AIOKafkaConsumerThread, "seek_to_committed", _seek_to_committed),  # 2
    (Consumer, "ack", _ack),  # 3
    (Consumer, "on_partitions_assigned", _on_partitions_assigned),  # 3
    (ProducerBuffer, "wait_until_ebb", _wait_until_ebb),  # 4
    (Collection, "_on_changelog_sent", _remember_changelog_offset),  # 5
    (TableManager, "on_commit", _on_commit),  # 5
    (Collection, "on_stop", _table_on_stop),  # 5
    (Consumer, "perform_seek", _perform_seek),  # 6
    (Consumer, "wait_first", _wait_first),  # 7
    (AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer),  # 8
)
_ORIGINALS: dict[tuple[Any, str], Any] = {}


def apply(*, fetch_max_wait_ms: int = 100) -> None:
    """Idempotent; must run before the app's producer and consumer start. Refuses to run on
    any Faust but the one the patches target."""
    global _fetch_max_wait_ms
    check_faust_version()
    _fetch_max_wait_ms = fetch_max_wait_ms
    if _ORIGINALS:
        return
    for owner, name, replacement in _REPLACEMENTS:
        _ORIGINALS[(owner, name)] = inspect.getattr_static(owner, name)
        setattr(owner, name, replacement)
