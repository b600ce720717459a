"""Issue 10 finding 6a: while Kafka is down, an ingest request answers 503 with Retry-After within
seconds (LEADSCORE_PRODUCE_TIMEOUT) instead of hanging for the producer's request timeout; once
the broker is back, ingest works again. On a private stack, since it stops the broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

import devstack
from tests.integration.support import ROOT, Api, Deployment, WorkerProcess, eventually
from tests.integration.test_stack import devstack_info, private_stack  # noqa: F401 — fixtures

pytestmark = pytest.mark.integration

PRODUCE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
async def ingest_on_private_stack(
    private_stack: devstack.StackInfo,  # noqa: F811 — the imported fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[WorkerProcess, str]]:
    deployment = Deployment(
        bootstrap_servers=private_stack.bootstrap_servers,
        mongo_url=private_stack.mongo_url,
        extra_env={"LEADSCORE_PRODUCE_TIMEOUT": str(PRODUCE_TIMEOUT)},
    )
    created = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "project", "create", "--name", "timeout", "--json"],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    api_key = json.loads(created.stdout.decode().strip().splitlines()[-1])["apiKey"]
    proc = WorkerProcess(deployment, tmp_path_factory.mktemp("ingest"), "ingest", "ingest")
    proc.start()
    try:
        await proc.wait_healthy(timeout=120)
        yield proc, api_key
    finally:
        proc.stop()


async def test_finding_6a_ingest_answers_503_with_retry_after_while_kafka_is_down(
    ingest_on_private_stack: tuple[WorkerProcess, str],
) -> None:
    proc, key = ingest_on_private_stack
    event = {"eventType": "signup", "leadId": "k-down"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        api = Api(http, proc.url, key)
        assert (await api.post("/api/events", {**event, "eventId": "before"}))[0] == 202
        await asyncio.to_thread(devstack.kill_broker, 1)
        try:
            for body in ({**event, "eventId": "during"}, {"events": [event, event]}):
                path = "/api/events" if "eventId" in body else "/api/events/batch"
                started = time.monotonic()
                status, headers, reply = await api.request_full("POST", path, body)
                took = time.monotonic() - started
                assert status == 503, (status, reply)
                assert int(headers["Retry-After"]) > 0, headers
                assert reply["dependency"] == "kafka", reply
                # bounded by the setting (plus scheduling slack on a busy machine), not 20 min
                assert took < PRODUCE_TIMEOUT + 15, took
        finally:
            await asyncio.to_thread(devstack.restart_broker, 1)
        await eventually(
            lambda: api.post("/api/events", {**event, "eventId": "after"}),
            lambda r: r[0] == 202,
            timeout=90,
            interval=1.0,
        )
    assert proc.proc is not None and proc.proc.poll() is None, proc.log_tail()
