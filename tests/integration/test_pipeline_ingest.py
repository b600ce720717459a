"""SPEC 2 on the topic: any Kafka client can produce the wire format (even to the wrong
partition), a missing timestamp means the record's own, and poison records are dead-lettered
without stopping their partition."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.partitioning import partition_for
from core.timeutil import US_PER_DAY, US_PER_HOUR
from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    api_mismatches,
    consume_all,
    iso,
    now_us,
    project_id_of,
    safe_past,
    unique_prefix,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration


async def _producer(deployment: Deployment) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    return producer


async def test_spec2_plain_kafka_producer_wrong_partition_and_record_timestamp(
    api: Api, deployment: Deployment, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    topic = f"{deployment.prefix}.events"
    n = deployment.partitions
    rng = random.Random(7)
    now = now_us()
    ref = Reference()
    records: list[tuple[bytes, dict[str, Any], int | None, int | None]] = []
    wrong = 0
    for i in range(60):
        lead = f"kafka-{i % 12}"
        key = f"{pid}:{lead}".encode()
        right = partition_for(key, n)
        event: dict[str, Any] = {
            "projectId": pid,
            "eventId": f"k-{i}",
            "eventType": rng.choice(["page_view", "signup", "unsubscribe", "download", "x.y"]),
            "leadId": lead,
        }
        partition = None
        if i % 3 == 0:  # explicitly to a partition other than the one murmur2 picks
            partition = (right + 1 + i % (n - 1)) % n
            assert partition != right
            wrong += 1
        if i % 10 == 4:  # no timestamp: the Kafka record's (CreateTime) is the event's
            ts_ms = (now - 2 * US_PER_DAY - i * US_PER_HOUR) // 1_000
            records.append((key, event, partition, ts_ms))
            ref.add(lead, event["eventId"], event["eventType"], ts_ms * 1_000)
        else:
            ts = safe_past(now, rng.randrange(30), rng)
            event["timestamp"] = iso(ts)
            records.append((key, event, partition, None))
            ref.add_wire(event)
    assert wrong >= 15

    producer = await _producer(deployment)
    try:
        for key, event, partition, ts_ms in records:
            await producer.send_and_wait(
                topic, orjson.dumps(event), key=key, partition=partition, timestamp_ms=ts_ms
            )
        await wait_mongo_matches(mongo_db, pid, ref, timeout=60)
        assert await api_mismatches(api, ref) == []
        # The same records again (each to its original partition, and the misrouted ones also
        # to the right one): nothing is counted twice.
        for key, event, partition, ts_ms in records:
            await producer.send_and_wait(
                topic, orjson.dumps(event), key=key, partition=partition, timestamp_ms=ts_ms
            )
            if partition is not None:
                await producer.send_and_wait(
                    topic, orjson.dumps(event), key=key, timestamp_ms=ts_ms
                )
        # A sentinel per lead after the resends: once scored, the resends have been too.
        for i, lead in enumerate(ref.leads()):
            key = f"{pid}:{lead}".encode()
            ts = now // 1_000_000 * 1_000_000 - 5 * US_PER_HOUR - i * 1_000_000
            event = {
                "projectId": pid,
                "eventId": f"sentinel-{lead}",
                "eventType": "page_view",
                "leadId": lead,
                "timestamp": iso(ts),
            }
            await producer.send_and_wait(topic, orjson.dumps(event), key=key)
            ref.add_wire(event)
    finally:
        await producer.stop()
    await wait_mongo_matches(mongo_db, pid, ref, timeout=60)
    assert await api_mismatches(api, ref) == []
    distinct = sum(len(events) for events in ref.events.values())
    assert await mongo_db.score_history.count_documents({"projectId": pid}) == distinct


async def test_spec2_poison_records_go_to_dead_letter_and_partition_goes_on(
    api: Api, deployment: Deployment, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    topic = f"{deployment.prefix}.events"
    n = deployment.partitions
    marker = unique_prefix("poison")
    partition = 1
    ts = iso(now_us() // 1_000_000 * 1_000_000 - 3 * US_PER_HOUR)
    # A valid lead of this project whose key the partitioner sends to `partition`.
    lead = next(
        f"{marker}-ok-{i}"
        for i in range(1000)
        if partition_for(f"{pid}:{marker}-ok-{i}".encode(), n) == partition
    )
    poison = {
        f"{pid}:{marker}-json".encode(): (b"\xff\x00{not json", "invalid JSON"),
        f"{pid}:{marker}-noid".encode(): (
            orjson.dumps(
                {"projectId": pid, "eventType": "page_view", "leadId": "x", "timestamp": ts}
            ),
            "invalid event",
        ),
        f"prj_{marker}:{marker}-unknown".encode(): (
            orjson.dumps(
                {
                    "projectId": f"prj_{marker}",
                    "eventId": "u1",
                    "eventType": "page_view",
                    "leadId": "x",
                    "timestamp": ts,
                }
            ),
            "unknown project",
        ),
        f"{pid}:{marker}-array".encode(): (b"[1, 2, 3]", "invalid event"),
        f"{pid}:{marker}-null".encode(): (None, ""),  # a tombstone: no value at all
    }
    valid = {
        "projectId": pid,
        "eventId": "after-poison",
        "eventType": "signup",
        "leadId": lead,
        "timestamp": ts,
    }
    producer = await _producer(deployment)
    try:
        for key, (value, _) in poison.items():
            await producer.send_and_wait(topic, value, key=key, partition=partition)
        await producer.send_and_wait(
            topic, orjson.dumps(valid), key=f"{pid}:{lead}".encode(), partition=partition
        )
    finally:
        await producer.stop()

    ref = Reference()
    ref.add_wire(valid)
    await wait_mongo_matches(mongo_db, pid, ref, timeout=60)

    dead = await consume_all(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.dead-letter",
        keep=lambda r: r.key in poison,
        until=lambda found: {r.key for r in found} >= set(poison),
    )
    by_key = {r.key: orjson.loads(r.value) for r in dead}
    assert len(dead) == len(poison), [r.key for r in dead]  # each parked once
    for key, (value, reason) in poison.items():
        body = by_key[key]
        assert body["reason"].startswith(reason), body
        assert body["topic"] == topic
        assert body["partition"] == partition
        assert body["value"] == (None if value is None else value.decode(errors="replace"))
    fields = {e["field"] for e in by_key[f"{pid}:{marker}-noid".encode()]["errors"]}
    assert "eventId" in fields
    fields = {e["field"] for e in by_key[f"prj_{marker}:{marker}-unknown".encode()]["errors"]}
    assert "projectId" in fields
