"""`leadscore ingest`: a process that only takes events over HTTP (no consumer, no tables) next
to the workers; what it accepts is scored by them like any other event, and it rejects bad
input the same way."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    WorkerProcess,
    api_mismatches,
    eventually,
    iso,
    now_us,
    safe_past,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def ingest(
    deployment: Deployment, work_dir: Path, worker: WorkerProcess
) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(deployment, work_dir, "ingest", command="ingest")
    process.start()
    try:
        await process.wait_healthy()
        yield process
    finally:
        process.stop()


async def test_events_taken_by_an_ingest_process_are_scored_by_the_workers(
    api: Api, ingest: WorkerProcess, http: aiohttp.ClientSession
) -> None:
    via_ingest = Api(http, ingest.url, api.api_key)
    now = now_us()
    rng = random.Random(11)
    ref = Reference()
    events = [
        {
            "eventId": f"ing-{i}",
            "eventType": ["page_view", "signup", "demo_request", "email_open"][i % 4],
            "leadId": f"ing-lead-{i % 5}",
            "timestamp": iso(safe_past(now, i % 9, rng)),
        }
        for i in range(40)
    ]
    for event in events:
        ref.add_wire(event)
    status, reply = await via_ingest.post("/api/events", events[0])
    assert status == 202, reply
    await via_ingest.send_events(events[1:])
    # a duplicate, through the ingest process too: counted once
    assert (await via_ingest.post("/api/events", events[7]))[0] == 202

    await eventually(lambda: api_mismatches(api, ref), lambda diffs: not diffs)


async def test_an_ingest_process_rejects_bad_input_and_serves_nothing_else(
    api: Api, ingest: WorkerProcess, http: aiohttp.ClientSession
) -> None:
    via_ingest = Api(http, ingest.url, api.api_key)
    status, reply = await via_ingest.post("/api/events", {"eventType": "page view"})
    assert status in (400, 422), reply
    assert {f["field"] for f in reply["fields"]} >= {"eventType", "leadId"}, reply
    status, reply = await via_ingest.with_key("wrong").post(
        "/api/events", {"eventType": "page_view", "leadId": "x"}
    )
    assert status == 401, reply
    status, body = await via_ingest.get("/api/health")
    assert status == 200 and body["status"] == "ok", body
    # reads need tables: a load balancer sends them to the workers
    status, _ = await via_ingest.get("/api/leads/x")
    assert status == 404
