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
    dead_letters,
    eventually,
    iso,
    now_us,
    produce_raw,
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


async def test_malformed_commands_and_claims_are_dead_lettered_naming_the_field(
    deployment: Deployment, api: Api, mongo_db: Any
) -> None:
    """ADR 0022: a lead command or identity record of this epoch that does not decode is
    dead-lettered with the field at fault; one of another epoch is ignored, even malformed; the
    agents go on (an identify of the same email, on the same claims partition, still owns it)."""
    pid = await project_id_of(api)
    lead = unique_prefix("cmd-lead")
    email = f"{unique_prefix('owner')}@example.com"
    command_key, claim_key = f"{pid}:{lead}".encode(), f"{pid}:{email}".encode()
    commands_topic = f"{deployment.prefix}.lead-commands"
    claims_topic = f"{deployment.prefix}.identity-claims"
    commands = [  # (value, the field its dead letter must name; None: ignored)
        ({"command": "nope", "projectId": 5, "epoch": 7}, None),  # another epoch
        (
            {"command": "promote", "projectId": pid, "email": email, "eventId": "x"}
            | {"timestamp": "yesterday", "epoch": 1},
            "$.timestamp",
        ),
        ({"command": "nope", "projectId": pid, "epoch": 1}, "$.command"),
        (
            {"command": "absorb", "projectId": pid, "from": "a", "events": [[1]], "epoch": 1},
            "$.events[0]",
        ),
    ]
    claims = [
        ({"claimant": 5, "epoch": 7}, None),
        (
            {"projectId": pid, "email": email, "eventId": "x", "timestamp": 1, "epoch": 1},
            "claimant",
        ),
        (
            {
                "release": True,
                "projectId": pid,
                "email": 5,
                "lead": "l",
                "eventId": "x",
                "epoch": 1,
            },
            "$.email",
        ),
    ]
    placed: dict[tuple[str, int, int], str | None] = {}
    for topic, key, records in (
        (commands_topic, command_key, commands),
        (claims_topic, claim_key, claims),
    ):
        positions = await produce_raw(
            deployment.bootstrap_servers, topic, [(key, orjson.dumps(v)) for v, _ in records]
        )
        for (partition, offset), (_, field) in zip(positions, records, strict=True):
            placed[(topic, partition, offset)] = field
    malformed = {position: field for position, field in placed.items() if field is not None}

    # the ignored records come first on their partitions: had they been dead-lettered, they
    # would be among the first dead letters of their keys
    parked = await dead_letters(
        deployment.bootstrap_servers,
        deployment.prefix,
        keep=lambda d: d["key"] in (command_key.decode(), claim_key.decode()),
        count=len(malformed),
    )
    assert {(d["topic"], d["partition"], d["offset"]) for d in parked} == set(malformed)
    for d in parked:
        field = malformed[(d["topic"], d["partition"], d["offset"])]
        assert field in d["reason"], d
        assert d["reason"].startswith(
            "invalid lead command" if d["topic"] == commands_topic else "invalid identity record"
        ), d

    # the identity agent goes on past them: an identify of that email claims it
    ts = iso(now_us() // 1_000_000 * 1_000_000 - US_PER_HOUR)
    identify = {
        "projectId": pid,
        "eventId": unique_prefix("id"),
        "eventType": "identify",
        "leadId": lead,
        "timestamp": ts,
        "properties": {"email": email},
    }
    await produce_raw(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.events",
        [(command_key, orjson.dumps(identify))],
    )

    async def owner() -> Any:
        return await mongo_db.leads.find_one({"projectId": pid, "email": email})

    found = await eventually(owner, lambda doc: doc is not None, timeout=90)
    assert found["leadId"] == lead
