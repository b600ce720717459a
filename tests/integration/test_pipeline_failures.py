"""SPEC 3 (dedup "after restarts") and SPEC 6 (nothing lost) under failures, each on a deployment
of its own: a worker stopped and killed, MongoDB stopped under load."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    api_mismatches,
    create_project,
    eventually,
    iso,
    now_us,
    restart_worker,
    safe_past,
    start_worker,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration

_TYPES = [
    "page_view",
    "email_open",
    "download",
    "signup",
    "unsubscribe",
    "webinar_attendance",
    "custom_event",
]


class Traffic:
    """Random events over a fixed set of leads, recorded in a reference as they are sent."""

    def __init__(self, api: Api, leads: int, seed: int) -> None:
        self.api = api
        self.rng = random.Random(seed)
        self.leads = [f"lead-{i}" for i in range(leads)]
        self.ref = Reference()
        self.now = now_us()
        self.sent: list[dict[str, Any]] = []
        self._sentinels = 0

    def make(self, tag: str, count: int) -> list[dict[str, Any]]:
        return [
            {
                "eventId": f"{tag}-{n}",
                "eventType": self.rng.choice(_TYPES),
                "leadId": self.rng.choice(self.leads),
                "timestamp": iso(safe_past(self.now, self.rng.randrange(40), self.rng)),
            }
            for n in range(count)
        ]

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Send, then one new event per lead: once those are scored, everything before is."""
        self._sentinels += 1
        sentinels = [
            {
                "eventId": f"sentinel-{self._sentinels}-{lead}",
                "eventType": "page_view",
                "leadId": lead,
                "timestamp": iso(safe_past(self.now, 0, self.rng)),
            }
            for lead in self.leads
        ]
        await self.api.send_events(events + sentinels)
        for event in events + sentinels:
            self.ref.add_wire(event)
        self.sent += events


async def _table_count(api: Api, lead: str) -> int:
    status, body = await api.get(f"/api/leads/{lead}")
    return int(body["eventCount"]) if status == 200 else 0


async def _restart_scenario(
    stack: tuple[str, str],
    http: aiohttp.ClientSession,
    mongo_db: Any,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """Events, a stop (`sig`) while a batch is being scored, a start with the same data dir; then
    the same events again (same eventIds) plus new ones: all agree with the reference."""
    deployment = Deployment.on(stack)
    db = mongo_db.client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, sig.name.lower())
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, sig.name)
        traffic = Traffic(Api(http, worker.url, key), leads=10, seed=int(sig))
        api = traffic.api
        await traffic.send(traffic.make("a", 120))
        await wait_mongo_matches(db, pid, traffic.ref)

        # Stop while the next batch is being scored (as soon as the table shows its first
        # events), so the stop hits events in flight and offsets not yet committed: the new
        # incarnation processes part of the log a second time.
        before = await _table_count(api, traffic.leads[0])
        burst = sorted(traffic.make("b", 1500), key=lambda e: e["timestamp"])
        await traffic.send(burst)
        await eventually(lambda: _table_count(api, traffic.leads[0]), lambda n: n > before)
        await restart_worker(worker, sig)
        # a clean stop keeps the local tables; anything else rebuilds them from the changelogs
        discarded = "did not stop cleanly" in worker.log_path.read_text(errors="replace")
        assert discarded == (sig == signal.SIGKILL)
        # Tables come back from RocksDB and the changelogs: table reads agree at once.
        await eventually(lambda: api_mismatches(api, traffic.ref), lambda d: not d, timeout=120)
        await wait_mongo_matches(db, pid, traffic.ref, timeout=60)

        await traffic.send(traffic.sent + traffic.make("c", 60))
        await wait_mongo_matches(db, pid, traffic.ref, timeout=60)
        assert await api_mismatches(api, traffic.ref) == []
        distinct = sum(len(events) for events in traffic.ref.events.values())
        assert await db.score_history.count_documents({"projectId": pid}) == distinct
    finally:
        worker.stop()


async def test_spec3_worker_stopped_and_restarted_counts_nothing_twice(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    await _restart_scenario(stack, http, mongo_db, tmp_path, signal.SIGTERM)


async def test_spec3_worker_killed_and_restarted_counts_nothing_twice_loses_nothing(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    """kill -9. (The new member joins once the broker expires the dead one: ~60 s.)"""
    await _restart_scenario(stack, http, mongo_db, tmp_path, signal.SIGKILL)


async def test_spec6_mongodb_outage_under_load_loses_nothing(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    import devstack

    status = {s.name: s for s in await asyncio.to_thread(devstack.status)}
    if "mongo" not in status or status["mongo"].external:
        pytest.skip("MongoDB is external (MONGO_URL): devstack cannot stop it")
    deployment = Deployment.on(stack)
    db = mongo_db.client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "outage")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "outage")
        traffic = Traffic(Api(http, worker.url, key), leads=12, seed=5)
        api = traffic.api
        await traffic.send(traffic.make("before", 80))
        await wait_mongo_matches(db, pid, traffic.ref)

        await asyncio.to_thread(devstack.stop_mongo)
        try:
            # Ingest needs only Kafka; scoring goes on (table reads see it) while the sink waits.
            for n in range(4):
                await traffic.send(traffic.make(f"during{n}", 60))
            await eventually(lambda: api_mismatches(api, traffic.ref), lambda d: not d, timeout=60)

            async def health() -> tuple[int, Any]:
                return await api.get("/api/health")

            _, body = await eventually(health, lambda r: r[0] == 503, timeout=30)
            assert body["mongodb"].startswith("down"), body
            assert body["kafka"] == "ok", body
            await traffic.send(traffic.make("during-late", 40))
        finally:
            await asyncio.to_thread(devstack.start_mongo)
        await traffic.send(traffic.make("after", 40))
        await wait_mongo_matches(db, pid, traffic.ref, timeout=120)
        distinct = sum(len(events) for events in traffic.ref.events.values())
        assert await db.score_history.count_documents({"projectId": pid}) == distinct
        assert await db.leads.count_documents({"projectId": pid}) == len(traffic.leads)
    finally:
        worker.stop()
