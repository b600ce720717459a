"""Small aiokafka helpers: topics, end offsets, consumer-group lag, bulk produce, full reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = [
    "OffsetProbe",
    "ScoredCounter",
    "create_topic",
    "delete_topics",
    "list_topics",
    "produce_all",
    "scan_topic",
]


class OffsetProbe:
    """End offsets of topics and committed offsets of groups, from one long-lived client pair."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)

    async def start(self) -> None:
        await self.consumer.start()
        await self.admin.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.admin.close()

    async def end_offsets(self, topic: str, partitions: int) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await self.consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}

    async def total(self, topic: str, partitions: int) -> int:
        try:
            return sum((await self.end_offsets(topic, partitions)).values())
        except Exception:  # topic not created yet
            return 0

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}

    async def lag(self, group: str, topic: str, partitions: int) -> int:
        ends = await self.end_offsets(topic, partitions)
        try:
            done = await self.committed(group, topic)
        except Exception:
            done = {}
        return sum(max(0, end - max(0, done.get(p, 0))) for p, end in ends.items())


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Produce every (key, value), murmur2-partitioned like Kafka's default; seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        chunk = 5_000
        for i in range(0, len(records), chunk):
            futures = [
                await producer.send(topic, key=k, value=v) for k, v in records[i : i + chunk]
            ]
            await asyncio.gather(*futures)
        return time.monotonic() - started
    finally:
        await producer.stop()


class ScoredCounter:
    """Events scored so far, read from the lead-changes topic: the sum over leads of the
    `eventCount` of each lead's latest change (a merged lead's removal counts 0; its events
    count in its owner). One LeadChange per lead per batch (scoring v2) makes counting
    messages meaningless; this counts what they say."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        self.counts: dict[str, int] = {}
        self.total = 0
        self.messages = 0

    async def start(self) -> None:
        """From the topic's current end: earlier changes are another run's."""
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def poll(self) -> int:
        batches = await self.consumer.getmany(timeout_ms=50, max_records=50_000)
        for records in batches.values():
            for record in records:
                self.messages += 1
                try:
                    change = orjson.loads(record.value)
                    lead = change["lead"]
                    name = f"{lead['projectId']}:{lead['leadId']}"
                    count = 0 if change.get("kind") == "remove" else int(lead["eventCount"])
                except (ValueError, KeyError, TypeError):
                    continue
                if change.get("kind") == "remove" or count > self.counts.get(name, 0):
                    self.total += count - self.counts.get(name, 0)
                    self.counts[name] = count
        return self.total


async def scan_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    visit: Callable[[int, Any], None],
    timeout: float = 120.0,
) -> int:
    """Read every record of `topic` up to its current end (no group); `visit(partition, record)`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        seen = 0
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {len(remaining)} partitions unfinished")
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        visit(tp.partition, record)
                        seen += 1
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):  # compacted/aborted gaps: position may pass the end
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return seen
    finally:
        await consumer.stop()
