"""Dead-letter admin (SPEC 11, issue #15): a dead letter is listed for its project, its cause
is fixed, it is re-driven, and its event is scored exactly once.

The cause here is a producer whose clock runs ahead: its event lies more than 5 minutes in
the future of the worker's clock and is dead-lettered as an invalid event. The worker runs on
a clock two hours behind (LEADSCORE_NOW) and is restarted on the real clock — the fix — after
which the re-driven record is valid.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tests.integration.support import (
    US_PER_SECOND,
    Api,
    Deployment,
    create_project,
    eventually,
    iso,
    now_us,
    restart_worker,
    start_worker,
)
from tests.integration.test_operability_metrics import moved, scrape

HOUR = 3600 * US_PER_SECOND


async def produce(deployment: Deployment, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(f"{deployment.prefix}.events", key=key, value=value)
    finally:
        await producer.stop()


async def listed(api: Api, query: str = "") -> list[dict[str, Any]]:
    status, body = await api.get(f"/api/dead-letters{query}")
    assert status == 200, body
    return list(body["deadLetters"])


async def test_dead_letter_is_listed_fixed_redriven_and_scored_once(
    stack: tuple[str, str], http: aiohttp.ClientSession, work_dir: Path
) -> None:
    now = now_us()
    deployment = Deployment.on(stack, LEADSCORE_NOW=iso(now - 2 * HOUR))
    worker = await start_worker(deployment, work_dir, "dead-letters")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "dl")
        _, other_key = await create_project(http, worker.url, deployment.admin_token, "dl-other")
        api = Api(http, worker.url, key)
        lead = f"dl-{uuid.uuid4().hex[:6]}"
        event = {
            "projectId": pid,
            "eventId": f"{lead}-signup",
            "eventType": "signup",
            "leadId": lead,
            "timestamp": iso(now - HOUR),  # an hour ahead of the worker's clock
        }
        await produce(
            deployment,
            [
                (f"{pid}:{lead}".encode(), orjson.dumps(event)),
                (f"{pid}:{lead}".encode(), b"{not json"),
            ],
        )
        both = await eventually(lambda: listed(api), lambda items: len(items) == 2, timeout=90)
        by_class = {d["reasonClass"]: d for d in both}
        assert set(by_class) == {"invalid event", "invalid JSON"}, both
        future = by_class["invalid event"]
        assert future["status"] == "open" and future["topic"] == "events"
        assert orjson.loads(future["value"]) == event
        assert any(e["field"] == "timestamp" for e in future["errors"]), future
        assert [d["id"] for d in await listed(api, "?reason=invalid%20event")] == [future["id"]]
        status, one = await api.get(f"/api/dead-letters/{future['id']}")
        assert status == 200 and one["key"] == f"{pid}:{lead}", one
        # another project sees none of them, and cannot open one
        assert await listed(api.with_key(other_key)) == []
        status, _ = await api.with_key(other_key).get(f"/api/dead-letters/{future['id']}")
        assert status == 404
        status, _ = await api.get(f"/api/leads/{lead}")
        assert status == 404

        # the fix: the worker's clock is right again
        deployment.extra_env.pop("LEADSCORE_NOW")
        await restart_worker(worker)
        status, body = await api.post("/api/dead-letters/redrive", {"reason": "invalid event"})
        assert status == 200, body
        assert body["redriven"] == [future["id"]] and body["more"] is False, body

        lead_doc = await eventually(
            lambda: api.get(f"/api/leads/{lead}"), lambda r: r[0] == 200, timeout=90
        )
        assert lead_doc[1]["eventCount"] == 1, lead_doc

        # re-driven again by id: deduplicated by eventId, still one event
        before = await scrape(http, worker.url)
        status, body = await api.post("/api/dead-letters/redrive", {"ids": [future["id"]]})
        assert status == 200 and body["redriven"] == [future["id"]], body
        await eventually(
            lambda: scrape(http, worker.url),
            lambda after: moved(
                before, after, "leadscore_events_scored_total", outcome="duplicate"
            )
            >= 1,
            timeout=90,
        )
        status, lead_body = await api.get(f"/api/leads/{lead}")
        assert status == 200 and lead_body["eventCount"] == 1, lead_body
        status, timeline = await eventually(
            lambda: api.get(f"/api/leads/{lead}/timeline"),
            lambda r: r[0] == 200 and len(r[1]["history"]) >= 1,
            timeout=60,
        )
        assert [row["eventId"] for row in timeline["history"]] == [event["eventId"]]
        status, one = await api.get(f"/api/dead-letters/{future['id']}")
        assert one["status"] == "redriven" and one["redriveCount"] == 2, one

        # purge the one that cannot be fixed; the other stays
        status, body = await api.post("/api/dead-letters/purge", {"reason": "invalid JSON"})
        assert status == 200 and body == {"purged": 1}, body
        assert [d["id"] for d in await listed(api)] == [future["id"]]
        status, body = await api.post("/api/dead-letters/redrive", {"ids": [], "reason": "x"})
        assert status == 422, body
        status, audit = await api.get("/api/audit-log")
        assert status == 200, audit
        actions = [e["action"] for e in audit["entries"]]
        assert actions.count("dead-letters.redrive") == 2 and "dead-letters.purge" in actions
    finally:
        worker.stop()
