"""`leadscore purge-erased`: remove erased leads' records from the topics kept for ever (ADR 0020).

With every worker stopped, and nothing producing to the events topic (the tool checks both):

1. read the erasures topic, and copy the events topic into a new topic `{prefix}.events-purge-
   {time}` without the records the drop rule drops (same partition, key, value, headers and
   timestamp), checking the copy's count;
2. truncate the events topic (Kafka DeleteRecords up to its end) and copy the kept records back
   — the topic keeps its name, partitions and configuration, so producers need no change;
3. open a new epoch (`leadscore replay`): the workers rebuild every table and document;
4. truncate lead-commands and identity-claims (the new epoch never reads older records; they hold
   forwarded events and e-mails), and delete the temporary copy.

A crash after step 2 began leaves the full copy in the temporary topic; the tool names it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from app.erasures import key_hash
from app.replay import start_replay
from app.settings import Settings
from app.topics import ensure_topics

__all__ = ["PurgeReport", "lead_key_of", "purge_erased"]


@dataclass(frozen=True, slots=True)
class PurgeReport:
    erased_keys: int
    records_read: int
    records_dropped: int
    new_epoch: int


def lead_key_of(value: bytes | None) -> tuple[str, str] | None:
    """(projectId, lead key) of an events-topic record, as the scoring agent derives them."""
    try:
        body = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    pid, lead = body.get("projectId"), body.get("leadId") or body.get("anonymousId")
    if isinstance(pid, str) and isinstance(lead, str):
        return pid, lead
    return None


async def _erasures(settings: Settings) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}

    async def keep(record: Any) -> None:
        if record.value is None:
            return
        body = orjson.loads(record.value)
        key = (body["projectId"], body["keyHash"])
        found[key] = max(found.get(key, 0), int(body["erasedAt"]))

    await _read_all(settings, settings.topic("erasures"), keep)
    return found


async def _read_all(
    settings: Settings, topic: str, each: Callable[[Any], Awaitable[None]]
) -> dict[int, int]:
    """Call `each` on every record of `topic`, in partition order; returns the end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset < ends[tp]:
                        await each(record)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def _copy(
    settings: Settings, source: str, target: str, keep: Callable[[Any], bool]
) -> tuple[int, int]:
    """(records read, records written) copying `source` to `target` partition by partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=20
    )
    await producer.start()
    counts = [0, 0]
    pending: list[asyncio.Future[Any]] = []

    async def each(record: Any) -> None:
        counts[0] += 1
        if not keep(record):
            return
        counts[1] += 1
        pending.append(
            await producer.send(
                target,
                key=record.key,
                value=record.value,
                partition=record.partition,
                timestamp_ms=record.timestamp,
                headers=list(record.headers or []),
            )
        )
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()

    try:
        await _read_all(settings, source, each)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts[0], counts[1]


async def _truncate(admin: AIOKafkaAdminClient, ends: dict[TopicPartition, int]) -> None:
    todo = {tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end > 0}
    if todo:
        await admin.delete_records(todo, timeout_ms=60_000)


async def _ends(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def purge_erased(settings: Settings) -> PurgeReport:
    await ensure_topics(settings)
    erasures = await _erasures(settings)

    def kept(record: Any) -> bool:
        found = lead_key_of(record.value)
        if found is None:
            return True  # not an event: it will be dead-lettered again, as before
        at = erasures.get((found[0], key_hash(*found)))
        return at is None or record.timestamp * 1000 > at

    events = settings.topic("events")
    temp = f"{events}-purge-{int(time.time())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        # refuses while a worker is still in the group, before anything is changed
        from app.replay import _active_members, app_id, read_epoch

        current = max(settings.app_version, await read_epoch(settings) or 1)
        if await _active_members(settings, app_id(settings, current)):
            raise RuntimeError("stop every worker first: they still consume the events topic")
        await admin.create_topics(
            [
                NewTopic(
                    temp,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs={"retention.ms": "-1"},
                )
            ]
        )
        before = await _ends(settings, events)
        read, written = await _copy(settings, events, temp, kept)
        copied = sum((await _ends(settings, temp)).values())
        if copied != written:
            raise RuntimeError(f"{temp} holds {copied} records, {written} were written; stopped")
        if await _ends(settings, events) != before:
            await admin.delete_topics([temp])
            raise RuntimeError(
                "events were produced during the purge: stop every process that produces "
                "(ingest processes, other clients) and run it again; nothing was changed"
            )
        await _truncate(admin, before)
        _, back = await _copy(settings, temp, events, lambda r: True)
        if back != written:
            raise RuntimeError(f"copied {back} of {written} back; the full copy is in {temp}")
        plan = await start_replay(settings)
        for name in ("lead-commands", "identity-claims"):
            await _truncate(admin, await _ends(settings, settings.topic(name)))
        await admin.delete_topics([temp])
    finally:
        await admin.close()
    return PurgeReport(len(erasures), read, read - written, plan.new_version)
