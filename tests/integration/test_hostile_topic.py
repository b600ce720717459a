"""Issue 10 findings 2 and 3 on the events topic: the same storability check as the API, so an
unstorable record produced by any Kafka client is dead-lettered naming the field, never written
to the tables or MongoDB, and the lead, its partition and the sink go on."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from core.timeutil import US_PER_HOUR
from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    api_mismatches,
    consume_all,
    eventually,
    iso,
    now_us,
    project_id_of,
    unique_prefix,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration


async def test_unstorable_records_on_the_topic_are_dead_lettered_and_the_lead_goes_on(
    api: Api, deployment: Deployment, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    topic = f"{deployment.prefix}.events"
    lead = unique_prefix("topic-lead")
    key = f"{pid}:{lead}".encode()
    ts = iso(now_us() // 1_000_000 * 1_000_000 - 2 * US_PER_HOUR)

    def event(event_id: str, **fields: Any) -> dict[str, Any]:
        base = {"projectId": pid, "eventId": event_id, "eventType": "signup", "leadId": lead}
        return {**base, "timestamp": ts, **fields}

    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"d": deep}
    poison: dict[str, tuple[bytes, str]] = {
        "big": (orjson.dumps(event("big", properties={"n": 2**64 - 1})), "properties.n"),
        "nul": (orjson.dumps(event("nul", properties={"a\x00b": 1})), "properties.a\x00b"),
        "year1": (orjson.dumps(event("year1", timestamp="0001-01-01T00:00:00+14:00")), "timestamp"),
        "deep": (orjson.dumps(event("deep", properties=deep)), "properties"),
        "lax": (orjson.dumps(event("lax", leadId=12345)), "leadId"),
    }
    valid = event("valid")
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value, _ in poison.values():
            await producer.send_and_wait(topic, value, key=key)
        await producer.send_and_wait(topic, orjson.dumps(valid), key=key)
    finally:
        await producer.stop()

    ref = Reference()
    ref.add_wire(valid)  # the lead holds the valid event only: no poison reached its tables
    await wait_mongo_matches(mongo_db, pid, ref, timeout=90)
    await eventually(lambda: api_mismatches(api, ref), lambda diffs: not diffs)

    dead = await consume_all(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.dead-letter",
        keep=lambda r: r.key == key,
        until=lambda found: len(found) >= len(poison),
    )
    by_id = {orjson.loads(orjson.loads(r.value)["value"])["eventId"]: r for r in dead}
    assert set(by_id) == set(poison), list(by_id)
    for event_id, (_, field) in poison.items():
        body = orjson.loads(by_id[event_id].value)
        assert body["reason"] == "invalid event", body
        assert field in {e["field"] for e in body["errors"]}, body
