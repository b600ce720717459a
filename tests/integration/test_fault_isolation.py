"""SPEC 12 in the consumers (issue 10): a record no one can process is dead-lettered (or, on the
projects topic, skipped and reported) and everything else goes on — over real Kafka, MongoDB
and worker processes. Each test is a regression test for one finding of the issue (findings 2
and 3 on the events topic: tests/integration/test_hostile_topic.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from app.kafka_probe import KafkaProbe
from app.records import materialized_version
from core.timeutil import US_PER_HOUR, US_PER_SECOND, parse_timestamp
from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    WorkerProcess,
    api_mismatches,
    create_project,
    dead_letter_count,
    dead_letters,
    eventually,
    free_port,
    iso,
    now_us,
    produce_raw,
    project_id_of,
    start_worker,
    unique_prefix,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration


def _hours_ago(hours: int) -> str:
    return iso(now_us() // US_PER_SECOND * US_PER_SECOND - hours * US_PER_HOUR)


def _event(pid: str, lead: str, event_id: str, hours_ago: int, **extra: Any) -> dict[str, Any]:
    return {
        "projectId": pid,
        "eventId": event_id,
        "eventType": "signup",
        "leadId": lead,
        "timestamp": _hours_ago(hours_ago),
        **extra,
    }


async def test_finding2_the_sink_dead_letters_a_change_mongodb_refuses_and_writes_the_rest(
    api: Api, deployment: Deployment, mongo_db: Any
) -> None:
    """A LeadChange already on lead-changes (an old log) whose history row holds a value MongoDB
    cannot store: that one lead's change is dead-lettered with MongoDB's error, every other
    lead is materialized, and health stays ok — the sink is not stuck."""
    pid = await project_id_of(api)
    poisoned = unique_prefix("refused")
    ts = _hours_ago(2)
    change = {
        "schema": 1,
        "kind": "upsert",
        "lead": {
            "projectId": pid,
            "leadId": poisoned,
            "aliases": [],
            "email": None,
            "name": None,
            "company": None,
            "currentScore": 30.0,
            "leadStage": "warm",
            "velocityScore": 1,
            "eventsLast24h": 1,
            "eventCount": 1,
            "firstEventAt": ts,
            "lastEventAt": ts,
            "scoreAtLastEvent": 30.0,
            "emailClaim": None,
            "version": materialized_version(1, 1),
            "computedAt": ts,
        },
        "history": [
            {
                "eventId": "e1",
                "eventType": "signup",
                "timestamp": ts,
                "timestampUs": 0,
                "points": 30,
                "scoreBefore": 0.0,
                "scoreAfter": 30.0,
                "properties": {"n": 2**64 - 1, "k\x00": 1},
            }
        ],
    }
    # the lead's next change (a later event, a good row) is written: only the refused one goes
    later = {
        **change,
        "lead": {**change["lead"], "version": materialized_version(1, 2), "eventCount": 2},
        "history": [{**change["history"][0], "eventId": "e2", "properties": {"n": 2**63 - 1}}],
    }
    key = f"{pid}:{poisoned}".encode()
    topic = f"{deployment.prefix}.lead-changes"
    await produce_raw(
        deployment.bootstrap_servers,
        topic,
        [(key, orjson.dumps(change)), (key, orjson.dumps(later))],
        partition=0,  # one partition: in this order, most likely in one sink batch
    )
    ref = Reference()
    events = [_event(pid, f"ok-{i}", f"ok-{i}", 1) for i in range(4)]
    await api.send_events(events)
    for e in events:
        ref.add_wire(e)
    await wait_mongo_matches(mongo_db, pid, ref, timeout=90)
    (parked,) = await dead_letters(
        deployment.bootstrap_servers,
        deployment.prefix,
        keep=lambda d: d["key"] == key.decode(),
        count=1,
    )
    assert parked["topic"] == topic
    assert parked["reason"].startswith("cannot be written to MongoDB"), parked
    assert orjson.loads(parked["value"])["history"][0]["eventId"] == "e1"
    rows = await eventually(
        lambda: mongo_db.score_history.find({"leadId": poisoned}).to_list(None),
        lambda found: len(found) == 1,
    )
    assert (rows[0]["eventId"], rows[0]["properties"]) == ("e2", {"n": 2**63 - 1})
    doc = await mongo_db.leads.find_one({"projectId": pid, "leadId": poisoned})
    assert doc is not None and doc["eventCount"] == 2
    status, health = await api.get("/api/health")
    assert (status, health["status"], health["stuck"]) == (200, "ok", {}), health


async def _health(http: aiohttp.ClientSession, worker: WorkerProcess) -> tuple[int, Any]:
    try:
        async with http.get(f"{worker.url}/api/health") as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError as exc:
        return 0, repr(exc)


async def test_finding1_a_projects_record_that_does_not_parse_is_skipped_and_a_worker_starts(
    stack: tuple[str, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Records on the compacted projects topic that no process can parse (what finding 1 left
    there): the worker skips them, keeps the project's last good record, reports both projects
    in /api/health, starts again over them — and recovers once good records follow."""
    deployment = Deployment.on(stack)
    worker = await start_worker(deployment, tmp_path, "projects")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "projects")
        api = Api(http, worker.url, key)
        topic = f"{deployment.prefix}.projects"
        broken = f"prj_{unique_prefix('broken')}"
        bad_settings = {"projectId": pid, "name": "x", "settings": {"stageThresholds": None}}
        await produce_raw(
            deployment.bootstrap_servers,
            topic,
            [(broken.encode(), b"\xff{not json"), (pid.encode(), orjson.dumps(bad_settings))],
        )
        status, body = await eventually(
            lambda: _health(http, worker),
            lambda r: r[0] == 503 and set(r[1].get("skippedProjects", {})) == {pid, broken},
        )
        assert body["kafka"] == body["mongodb"] == "ok", body

        worker.stop(signal.SIGTERM)
        worker.start()
        status, body = await eventually(
            lambda: _health(http, worker),
            lambda r: r[0] == 503 and bool(r[1].get("projectsLoaded")),
            timeout=90,
        )
        assert set(body["skippedProjects"]) == {pid, broken}, body
        ref = Reference()
        events = [
            {"eventId": f"e{i}", "eventType": "signup", "leadId": "L", "timestamp": _hours_ago(i)}
            for i in range(3)
        ]
        await api.send_events(events)  # the project's last good record still works
        for e in events:
            ref.add_wire(e)
        await eventually(lambda: api_mismatches(api, ref), lambda d: not d, timeout=60)

        status, _ = await api.put("/api/settings", {"graceDays": 7})  # republishes the project
        assert status == 200
        good = {"projectId": broken, "name": "fixed", "version": 1}
        await produce_raw(
            deployment.bootstrap_servers, topic, [(broken.encode(), orjson.dumps(good))]
        )
        await eventually(lambda: _health(http, worker), lambda r: r[0] == 200)
    finally:
        worker.stop()


class _Forwarder:
    """A TCP port that forwards to Kafka only while it is switched on: Kafka "down" at the
    bootstrap address, then back (after bootstrap, clients talk to the advertised broker)."""

    def __init__(self, target: str) -> None:
        host, port = target.split(",")[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def on(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def off(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def _forwarder(target: str) -> AsyncIterator[_Forwarder]:
    forwarder = _Forwarder(target)
    try:
        yield forwarder
    finally:
        await forwarder.off()


async def test_finding6b_kafka_health_recovers_after_a_failed_first_check(
    stack: tuple[str, str],
) -> None:
    """The first check comes while Kafka cannot be reached; once it can, the next check passes
    (the client whose start failed used to be kept, and health stayed degraded for ever)."""
    async with _forwarder(stack[0]) as kafka:
        probe = KafkaProbe(f"127.0.0.1:{kafka.port}")
        try:
            with pytest.raises(Exception):  # noqa: B017 — whatever aiokafka raises when down
                await asyncio.wait_for(probe.check(), 10)
            await kafka.on()
            await eventually(_passes(probe), lambda ok: ok, timeout=30, interval=1.0)
        finally:
            await probe.close()


def _passes(probe: KafkaProbe) -> Any:
    async def check() -> bool:
        try:
            await asyncio.wait_for(probe.check(), 10)
        except Exception:
            return False
        return True

    return check


async def test_finding5_outputs_are_split_under_the_producers_message_limit(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    """With the producer limited to 150 kB: a late event on a lead with 1,200 later events
    rewrites every row (one ~230 kB change), and a rescore re-emits rows with 3 kB properties
    (~200 kB for one lead). Both are split under the limit and materialized exactly; before,
    the producer refused them and the records were dead-lettered."""
    deployment = Deployment.on(
        stack, PRODUCER_MAX_REQUEST_SIZE="150000", LEADSCORE_MAX_MESSAGE_BYTES="65536"
    )
    db = mongo_db.client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "bounded")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "bounded")
        api = Api(http, worker.url, key)
        start = now_us() // US_PER_SECOND * US_PER_SECOND - 30 * 24 * US_PER_HOUR
        long_lead = [
            {
                "eventId": f"long-{i:05d}",
                "eventType": "page_view",
                "leadId": "long",
                "timestamp": iso(start + i * 60 * US_PER_SECOND),
            }
            for i in range(1, 1201)
        ]
        heavy = [
            {
                "eventId": f"heavy-{i:03d}",
                "eventType": "page_view" if i % 2 else "download",
                "leadId": "heavy",
                "timestamp": iso(start + i * US_PER_HOUR),
                "properties": {"blob": f"{i:03d}" * 1000},
            }
            for i in range(60)
        ]
        await api.send_events(long_lead + heavy)
        late = {"eventId": "late", "eventType": "signup", "leadId": "long", "timestamp": iso(start)}
        await api.send_events([late])
        ref = Reference()
        for e in [*long_lead, *heavy, late]:
            ref.add_wire(e)
        await wait_mongo_matches(db, pid, ref, timeout=180)

        status, body = await api.put("/api/rules/page_view", {"points": 7})
        assert status == 200, body
        status, body = await api.post("/api/admin/rescore")
        assert status == 202, body
        rescored = Reference()
        for e in [*long_lead, *heavy, late]:
            rescored.add_wire(e, points=7 if e["eventType"] == "page_view" else None)
        await wait_mongo_matches(db, pid, rescored, timeout=180)
        row = await db.score_history.find_one({"projectId": pid, "eventId": "heavy-007"})
        assert row is not None and row["properties"] == heavy[7]["properties"]

        # A merge moves every event of the absorbed lead, with its properties (~200 kB here),
        # to the owner: the absorb commands are cut by size too.
        email = {"email": "same@example.com"}
        claim = {"eventType": "identify", "properties": email}
        owner = {"eventId": "owner-id", "leadId": "owner", "timestamp": iso(start), **claim}
        await api.send_events([owner])
        rescored.add_wire(owner)
        await wait_mongo_matches(db, pid, rescored, timeout=120)
        merging = {"eventId": "heavy-id", "leadId": "heavy", "timestamp": iso(start), **claim}
        await api.send_events([merging])
        merged = Reference()
        for e in [*long_lead, late]:
            merged.add_wire(e, points=7 if e["eventType"] == "page_view" else None)
        for e in [owner, *heavy, merging]:
            points = 7 if e["eventType"] == "page_view" else None
            merged.add(
                "owner", e["eventId"], e["eventType"], parse_timestamp(e["timestamp"]), points
            )
        await wait_mongo_matches(db, pid, merged, timeout=180)
        row = await db.score_history.find_one(
            {"projectId": pid, "leadId": "owner", "eventId": "heavy-059"}
        )
        assert row is not None and row["properties"] == heavy[59]["properties"]
        assert await dead_letter_count(deployment) == 0
    finally:
        worker.stop()
