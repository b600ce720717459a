"""Replay: rebuild every table and MongoDB document from the events topic (SPEC 7).

A replay starts a new epoch: the app version goes up by one and is recorded on the compacted
control topic, which every worker reads when it starts. A new version means a new consumer group
(reading the events topic from the beginning, or from `--to-datetime`), new changelog topics and
new local table directories — tables and changelogs are never reset one without the other. Old
epochs' internal messages are ignored, and the sink's version guard lets the rebuilt documents
overwrite the old ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from app import topology
from app.settings import ROLES, Settings
from app.topics import ensure_topics

__all__ = [
    "TABLES",
    "ReplayPlan",
    "app_id",
    "clean_old_versions",
    "internal_topics",
    "read_epoch",
    "start_replay",
]

_EPOCH_KEY = b"appVersion"
log = logging.getLogger(__name__)


# The tables of a worker, as `app.topology` declares them (a unit test keeps this true).
TABLES = tuple(table.name for table in topology.TABLES)


def app_id(settings: Settings, version: int, role: str = "worker") -> str:
    """Faust's app id, which is also the consumer group and the changelog topic prefix."""
    base = settings.app_id_of(role)
    return base if version <= 1 else f"{base}-v{version}"


def internal_topics(settings: Settings, version: int) -> list[str]:
    """The topics Faust creates for one epoch: table changelogs and assignor leader topics.

    Exact names, not prefixes: `{prefix}-` is also the start of every later epoch's topics
    (`{prefix}-v2-...`) and of other deployments' (`{prefix}-eu-...`).
    """
    worker = app_id(settings, version)
    leaders = [f"{app_id(settings, version, role)}-__assignor-__leader" for role in ROLES]
    return [*(f"{worker}-{table}-changelog" for table in TABLES), *leaders]


async def read_epoch(settings: Settings) -> int | None:
    """The app version recorded by the last replay, if any (retried: a topic just created may
    not have a leader yet)."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_exponential(max=2), reraise=True
    ):
        with attempt:
            return await _read_epoch(settings)
    return None


async def _read_epoch(settings: Settings) -> int | None:
    tp = TopicPartition(settings.topic("control"), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # no group: start at the log start, no seek needed
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        version: int | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for message in batch.get(tp, []):
                if message.key == _EPOCH_KEY and message.value:
                    version = _epoch_of(message.value, version)
        return version
    finally:
        await consumer.stop()


def _epoch_of(value: bytes, previous: int | None) -> int | None:
    """The app version a control record names; a record that does not parse is skipped (with a
    log line) rather than stopping every worker's start (SPEC 12)."""
    try:
        version = orjson.loads(value)["appVersion"]
        if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
            return version
        raise ValueError(f"appVersion must be a positive integer, not {version!r}")
    except (ValueError, TypeError, KeyError) as exc:
        log.error("control topic: epoch record skipped: %r", exc)
        return previous


@dataclass(frozen=True)
class ReplayPlan:
    previous_version: int
    new_version: int
    group: str
    start_offsets: dict[int, int] | None


async def _active_members(settings: Settings, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
        return sum(
            len(group["members"]) for resp in described for group in resp.to_object()["groups"]
        )
    finally:
        await admin.close()


async def start_replay(
    settings: Settings, *, to_datetime: datetime | None = None, force: bool = False
) -> ReplayPlan:
    """Open a new epoch; workers (re)started afterwards rebuild everything from the log."""
    await ensure_topics(settings)
    current = max(settings.app_version, await read_epoch(settings) or 1)
    live = await _active_members(settings, app_id(settings, current))
    if live and not force:
        raise RuntimeError(
            f"{live} worker(s) still consume as {app_id(settings, current)!r}: stop every worker "
            "first (or pass --force and restart them all right after)"
        )
    new = current + 1
    group = app_id(settings, new)
    offsets = await _commit_start(settings, group, to_datetime) if to_datetime else None
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        record = {
            "appVersion": new,
            "previous": current,
            "fromDatetime": to_datetime.isoformat() if to_datetime else None,
            "at": time.time(),
        }
        await producer.send_and_wait(
            settings.topic("control"), key=_EPOCH_KEY, value=orjson.dumps(record)
        )
    finally:
        await producer.stop()
    return ReplayPlan(current, new, group, offsets)


async def _commit_start(settings: Settings, group: str, since: datetime) -> dict[int, int]:
    """Commit the new group's starting offsets on the events topic at `since`."""
    topic = settings.topic("events")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        ends = await consumer.end_offsets(tps)
        offsets = {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}
        await consumer.commit(offsets)
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


async def clean_old_versions(settings: Settings) -> list[str]:
    """Remove what older epochs left behind: their changelog/leader topics and local tables."""
    import shutil

    current = max(settings.app_version, await read_epoch(settings) or 1)
    old = {t for v in range(1, current) for t in internal_topics(settings, v)}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        stale = sorted(old.intersection(await admin.list_topics()))
        if stale:
            await admin.delete_topics(stale)
    finally:
        await admin.close()
    removed = [f"topic {t}" for t in stale]
    for version in range(1, current):
        paths = [settings.data_dir / settings.app_id_of(role) / f"v{version}" for role in ROLES]
        for path in filter(Path.exists, paths):
            shutil.rmtree(path)
            removed.append(f"dir {path}")
    return removed
