"""SPEC 12 / ADR 0015: a temporary fault (disk full, broker unreachable, MongoDB down) is retried
until it passes — never dead-lettered, never committed past, never counted twice. Faults are made
for real where a private stack allows it, else injected at the point where real hardware raises
them (LEADSCORE_TEST_FAULTS, a test-only hook of app/faults.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

import devstack
from tests.integration.support import (
    Api,
    Deployment,
    api_mismatches,
    create_project,
    dead_letter_count,
    eventually,
    private_stack,
    start_worker,
    wait_mongo_matches,
)
from tests.integration.test_pipeline_failures import Traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_finding4_disk_full_and_produce_timeouts_are_retried_not_dead_lettered(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    """The table store fails with ENOSPC after a record's first writes, and producing its lead
    change times out, four times each, under load: every event still counts exactly once
    (table and MongoDB equal to SPEC 3 over what was sent), and nothing is dead-lettered —
    the old catch-all parked these records and committed past them."""
    deployment = Deployment.on(stack, LEADSCORE_TEST_FAULTS="table-write=4,produce=4")
    db = mongo_db.client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "faults")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "faults")
        traffic = Traffic(Api(http, worker.url, key), leads=8, seed=4)
        await traffic.send(traffic.make("a", 150))
        await wait_mongo_matches(db, pid, traffic.ref, timeout=120)
        # a batch's LeadChanges travel while its table commit is retried (backoff up to 10 s)
        await eventually(
            lambda: api_mismatches(traffic.api, traffic.ref), lambda bad: bad == [], timeout=120
        )
        log = worker.log_path.read_text(errors="replace")
        assert "injecting a table-write fault (0 left)" in log
        assert "injecting a produce fault (0 left)" in log
        assert "scoring: temporary fault, retry" in log
        assert await dead_letter_count(deployment) == 0
        distinct = sum(len(events) for events in traffic.ref.events.values())
        assert await db.score_history.count_documents({"projectId": pid}) == distinct
        _, health = await eventually(
            lambda: traffic.api.get("/api/health"), lambda r: r[0] == 200, timeout=30
        )
        assert health["stuck"] == {}, health
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def stack3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A three-broker Kafka and a MongoDB-wire server of this module's own (they get killed)."""
    with private_stack(tmp_path_factory.mktemp("stack3"), brokers=3) as info:
        yield info


async def _send(traffic: Traffic, events: list[dict[str, Any]]) -> None:
    """Send until accepted: while a broker fails over, ingest may answer 503 (after producing
    part of a batch) or time out, and a client retries with the same eventIds. The reference
    takes every event once, whatever the attempts were."""
    for event in events:
        traffic.ref.add_wire(event)

    async def attempt() -> bool:
        try:
            await traffic.api.send_events(events)
        except (AssertionError, aiohttp.ClientError, TimeoutError):
            return False
        return True

    await eventually(attempt, lambda ok: ok, timeout=120, interval=2.0)


async def _assert_exact_and_nothing_dead(
    deployment: Deployment, db: Any, pid: str, traffic: Traffic
) -> None:
    await wait_mongo_matches(db, pid, traffic.ref, timeout=180)
    assert await api_mismatches(traffic.api, traffic.ref) == []
    distinct = sum(len(events) for events in traffic.ref.events.values())
    assert await db.score_history.count_documents({"projectId": pid}) == distinct
    assert await db.leads.count_documents({"projectId": pid}) == len(traffic.leads)
    assert await dead_letter_count(deployment) == 0


async def test_a_broker_of_three_killed_and_restarted_under_load_loses_and_doubles_nothing(
    stack3: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    deployment = Deployment(
        stack3.bootstrap_servers, stack3.mongo_url, extra_env={"LEADSCORE_REPLICATION": "3"}
    )
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack3.mongo_url, tz_aware=True)
    db = client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "brokers")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "brokers")
        traffic = Traffic(Api(http, worker.url, key), leads=10, seed=31)
        await _send(traffic, traffic.make("before", 100))
        await wait_mongo_matches(db, pid, traffic.ref, timeout=120)

        await asyncio.to_thread(devstack.kill_broker, 2)  # SIGKILL: a crash
        for n in range(3):
            await _send(traffic, traffic.make(f"during{n}", 80))
        await asyncio.to_thread(devstack.restart_broker, 2)
        await _send(traffic, traffic.make("after", 60))
        await _assert_exact_and_nothing_dead(deployment, db, pid, traffic)
    finally:
        worker.stop()
        client.close()


async def test_mongodb_stopped_for_60s_under_load_loses_and_doubles_nothing(
    stack3: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """While MongoDB is away the sink retries (health names it stuck), scoring goes on; after,
    everything is materialized once."""
    deployment = Deployment(
        stack3.bootstrap_servers, stack3.mongo_url, extra_env={"LEADSCORE_REPLICATION": "3"}
    )
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(stack3.mongo_url, tz_aware=True)
    db = client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "mongo")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "mongo")
        traffic = Traffic(Api(http, worker.url, key), leads=10, seed=32)
        await _send(traffic, traffic.make("before", 80))
        await wait_mongo_matches(db, pid, traffic.ref, timeout=120)

        await asyncio.to_thread(devstack.stop_mongo)
        stopped = time.monotonic()
        try:
            n = 0
            while time.monotonic() - stopped < 60:
                await _send(traffic, traffic.make(f"during{n}", 40))
                n += 1
                await asyncio.sleep(5)
            status, health = await traffic.api.get("/api/health")
            assert status == 503 and health["mongodb"].startswith("down"), health
            assert "sink" in health["stuck"], health
            assert await api_mismatches(traffic.api, traffic.ref) == []  # scoring went on
        finally:
            await asyncio.to_thread(devstack.start_mongo)
        await _send(traffic, traffic.make("after", 40))
        await _assert_exact_and_nothing_dead(deployment, db, pid, traffic)
        await eventually(lambda: traffic.api.get("/api/health"), lambda r: r[0] == 200)
    finally:
        worker.stop()
        client.close()
