"""Erasures of leads (SPEC 11, ADR 0020): the records, and their directory on every worker.

An erasure is one record per erased key (the lead, its aliases, its anonymous ids) on the
compacted topic `{prefix}.erasures`, keyed `"{projectId}:{sha256 of the lead key}"`, valued
`{projectId, keyHash, erasedAt (µs), by}`. The key itself is never written: what is kept is
the hash, when, and by whom (SPEC 11's erasure record). The topic belongs to no epoch: a replay
reads it whole, like the projects topic, before scoring anything.

The rule every scoring worker applies (agents/scoring.py): an event whose lead key is erased is
dropped when its record entered the log (its Kafka timestamp) at or before the erasure. Kafka
timestamps are part of the log, so a replay drops exactly the same events; an event sent after
the erasure starts a new lead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from app.settings import Settings

__all__ = ["ErasureDirectory", "erasure_record", "key_hash"]

log = logging.getLogger(__name__)


def key_hash(project_id: str, lead_key: str) -> str:
    """The hash an erasure keeps instead of the key (sha256 of `"{projectId}:{leadKey}"`)."""
    return hashlib.sha256(f"{project_id}:{lead_key}".encode()).hexdigest()


def erasure_record(project_id: str, lead_key: str, erased_at: int, by: Any) -> tuple[bytes, bytes]:
    """(Kafka key, value) of the erasure of one key."""
    digest = key_hash(project_id, lead_key)
    value = {"projectId": project_id, "keyHash": digest, "erasedAt": erased_at, "by": by}
    return f"{project_id}:{digest}".encode(), orjson.dumps(value)


class ErasureDirectory(Service):
    """Every erasure of the deployment, in memory: (projectId, key hash) -> erasedAt (µs).

    A key erased twice keeps the later time (events between the two erasures are dropped as
    well, which is what the second erasure asked for)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._tp = TopicPartition(settings.topic("erasures"), 0)
        self._erased: dict[tuple[str, str], int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._loaded = asyncio.Event()

    def apply(self, project_id: str, digest: str, erased_at: int) -> None:
        current = self._erased.get((project_id, digest))
        if current is None or erased_at > current:
            self._erased[(project_id, digest)] = erased_at

    def erased_at(self, project_id: str, lead_key: str) -> int | None:
        return self._erased.get((project_id, key_hash(project_id, lead_key)))

    def drops(self, project_id: str, lead_key: str, logged_at: int) -> bool:
        """Whether an event of this key, logged at `logged_at` (µs), belongs to an erasure."""
        if not self._erased:
            return False
        at = self.erased_at(project_id, lead_key)
        return at is not None and logged_at <= at

    def drops_record(self, key: bytes | None, logged_at: int) -> bool:
        """`drops` for an events-topic record by its Kafka key `"{projectId}:{leadKey}"`, before
        its value is read (so an erased key's invalid records are not dead-lettered either)."""
        if not self._erased or not key:
            return False
        try:
            project_id, sep, lead_key = key.decode().partition(":")
        except UnicodeDecodeError:
            return False
        return bool(sep) and self.drops(project_id, lead_key, logged_at)

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        while await self._consumer.position(self._tp) < end:
            await self._read(timeout_ms=1000)
        self._loaded.set()
        self.add_future(self._tail())

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _tail(self) -> None:
        while not self.should_stop:
            await self._read(timeout_ms=500)

    async def _read(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(self._tp, timeout_ms=timeout_ms)
        for message in batches.get(self._tp, []):
            try:
                if message.value is None:
                    continue
                body = orjson.loads(message.value)
                self.apply(body["projectId"], body["keyHash"], int(body["erasedAt"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("erasures offset %d: unreadable record skipped: %r", message.offset, exc)
