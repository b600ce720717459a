"""Erasure of a lead (SPEC 11, ADR 0020), and that no replay brings it back.

A person used three keys: a lead id, an anonymous visitor id merged into it by e-mail, and a
browser cookie id noted on its events. Erasing the lead id makes every key answer 404, empties
MongoDB of the person, releases the e-mail, and leaves every other lead as it was; an event
sent for the same key afterwards starts a new lead, and another lead can take the e-mail. A
full `leadscore replay` then rebuilds exactly the same project: still without the person.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tests.integration.support import (
    Api,
    consume_all,
    eventually,
    iso,
    now_us,
    safe_past,
)
from tests.integration.test_replay_and_scaling import (
    _epochs,
    _one_worker_project,
    _replay_and_restart,
    _settled,
    _snapshot,
    own_deployment,  # noqa: F401 — the fixture
)


def _events(tag: str, rng: random.Random, now: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(4):
        for i in range(3):
            out.append(
                {
                    "eventId": f"{tag}-keep{n}-{i}",
                    "eventType": rng.choice(["page_view", "signup", "demo_request"]),
                    "leadId": f"keep-{n}",
                    "timestamp": iso(safe_past(now, rng.randint(0, 5), rng)),
                    "properties": {"i": i},
                }
            )
    return out


async def _status(api: Api, path: str) -> int:
    return (await api.get(path))[0]


async def test_erased_lead_is_gone_everywhere_and_a_replay_does_not_bring_it_back(
    own_deployment: Any,  # noqa: F811
    http: aiohttp.ClientSession,
) -> None:
    deployment, _, db, workers = own_deployment
    api, pid = await _one_worker_project(own_deployment, http, "erasure")
    rng = random.Random(7)
    now = now_us()
    tag = uuid.uuid4().hex[:6]
    email = f"person-{tag}@example.com"
    person = [
        {
            "eventId": f"{tag}-p1",
            "eventType": "signup",
            "leadId": "erase-me",
            "anonymousId": "cookie-1",
            "timestamp": iso(safe_past(now, 2, rng)),
            "properties": {"secret": "the person's data"},
        },
        {
            "eventId": f"{tag}-p2",
            "eventType": "identify",
            "leadId": "erase-me",
            "timestamp": iso(safe_past(now, 2, rng) + 1_000_000),
            "properties": {"email": email},
        },
    ]
    visitor = [
        {
            "eventId": f"{tag}-v1",
            "eventType": "page_view",
            "anonymousId": "anon-x",
            "timestamp": iso(safe_past(now, 1, rng)),
            "properties": {"path": "/pricing"},
        },
        {
            "eventId": f"{tag}-v2",
            "eventType": "identify",
            "anonymousId": "anon-x",
            "timestamp": iso(safe_past(now, 1, rng) + 1_000_000),
            "properties": {"email": email},
        },
    ]
    others = _events(tag, rng, now)
    await api.send_events(others + person)
    await eventually(
        lambda: api.get("/api/leads/erase-me"),
        lambda r: r[0] == 200 and r[1]["email"] == email,
        timeout=90,
    )
    await api.send_events(visitor)
    await eventually(
        lambda: api.get("/api/leads/anon-x"),
        lambda r: r[0] == 200 and r[1]["leadId"] == "erase-me" and r[1]["eventCount"] == 4,
        timeout=90,
    )
    await _settled(db, pid, len(others) + 4)
    # a record of the person that could not be scored: listed, then erased with the rest
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{deployment.prefix}.events", key=f"{pid}:erase-me".encode(), value=b"{bad"
        )
    finally:
        await producer.stop()
    await eventually(lambda: api.get("/api/dead-letters"), lambda r: len(r[1]["deadLetters"]) == 1)
    before = await _snapshot(db, pid)
    kept_before = ([d for d in before[0] if d[0].startswith("keep-")], before[1][:])
    kept_before = (kept_before[0], [r for r in before[1] if r[0].startswith("keep-")])

    status, body = await api.request("DELETE", "/api/leads/anon-x")  # by its alias
    assert status == 202, body
    assert body["keyHash"] == hashlib.sha256(f"{pid}:anon-x".encode()).hexdigest()

    keys = ("erase-me", "anon-x", "cookie-1")

    async def statuses() -> list[int]:
        return [
            await _status(api, f"/api/leads/{k}{suffix}")
            for k in keys
            for suffix in ("", "/timeline", "/export", "/intelligence")
        ]

    await eventually(statuses, lambda got: set(got) == {404}, timeout=60)

    async def person_in_mongo() -> list[Any]:
        leads = await db.leads.find(
            {"projectId": pid, "$or": [{"leadId": {"$in": keys}}, {"email": email}]}
        ).to_list(None)
        rows = await db.score_history.find(
            {"projectId": pid, "leadId": {"$in": keys}}
        ).to_list(None)
        return leads + rows

    await eventually(person_in_mongo, lambda found: found == [], timeout=60)
    await eventually(lambda: api.get("/api/dead-letters"), lambda r: r[1]["deadLetters"] == [])
    after = await _snapshot(db, pid)
    assert after == kept_before, "other leads changed"
    status, listed = await api.get("/api/leads?limit=1000")
    assert status == 200 and {d["leadId"] for d in listed["leads"]} == {
        f"keep-{n}" for n in range(4)
    }

    # the erasure record: hashed keys, when, by whom; never the key itself
    records = await consume_all(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.erasures",
        lambda r: True,
        lambda found: len(found) >= 3,
    )
    values = [orjson.loads(r.value) for r in records]
    hashes = {hashlib.sha256(f"{pid}:{k}".encode()).hexdigest() for k in keys}
    assert hashes <= {v["keyHash"] for v in values}
    assert all(v["by"] == {"kind": "key", **v["by"]} for v in values)
    raw = b"".join(r.value for r in records)
    assert not any(k.encode() in raw for k in keys) and email.encode() not in raw
    status, audit = await api.get("/api/audit-log")
    assert any(e["action"] == "lead.erase" for e in audit["entries"]), audit

    # afterwards: the same key starts a new lead, and the e-mail is free to be claimed
    later = [
        {
            "eventId": f"{tag}-n1",
            "eventType": "page_view",
            "leadId": "erase-me",
            "timestamp": iso(safe_past(now, 0, rng)),
        },
        {
            "eventId": f"{tag}-n2",
            "eventType": "identify",
            "leadId": "new-owner",
            "timestamp": iso(safe_past(now, 0, rng)),
            "properties": {"email": email},
        },
    ]
    await api.send_events(later)
    status, fresh = await eventually(
        lambda: api.get("/api/leads/erase-me"), lambda r: r[0] == 200, timeout=60
    )
    assert fresh["eventCount"] == 1 and fresh["email"] is None and fresh["aliases"] == []
    await eventually(
        lambda: api.get("/api/leads/new-owner"),
        lambda r: r[0] == 200 and r[1]["email"] == email,
        timeout=60,
    )
    await _settled(db, pid, len(others) + len(later))
    await eventually(
        lambda: db.leads.find_one({"projectId": pid, "leadId": "new-owner", "email": email}),
        lambda doc: doc is not None,
        timeout=60,
    )
    settled = await _snapshot(db, pid)

    await _replay_and_restart(deployment, workers[0])

    await eventually(lambda: _epochs(db, pid), lambda epochs: epochs == {2}, timeout=90)
    await eventually(lambda: _snapshot(db, pid), lambda got: got == settled, timeout=90)
    for k in ("anon-x", "cookie-1"):
        assert await _status(api, f"/api/leads/{k}") == 404
    assert (await api.get("/api/dead-letters"))[1]["deadLetters"] == []
    status, export = await api.get("/api/leads/erase-me/export")
    assert status == 200 and [e["eventId"] for e in export["events"]] == [f"{tag}-n1"]
