"""Replay, rebuild, rescore, invariant checks and scaling over partitions (SPEC 7, issue 5).

Each test runs against the real broker and MongoDB-wire server; the replay and scaling tests run
their own deployment (own topics, group and database) so they can stop and kill workers.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from app.records import VERSION_EPOCH_BITS
from core.config import Rule, ScoringConfig
from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    Reference,
    WorkerProcess,
    create_project,
    eventually,
    iso,
    now_us,
    project_id_of,
    safe_past,
    start_worker,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration

EVENT_TYPES = ["page_view", "email_open", "download", "signup", "unsubscribe", "feature_used"]


def _events(n: int, leads: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = now_us()
    out = []
    for i in range(n):
        lead = f"lead-{rng.randrange(leads):03d}"
        out.append(
            {
                "eventId": f"e{seed}-{i}",
                "eventType": rng.choice(EVENT_TYPES),
                "anonymousId": lead,
                "timestamp": iso(safe_past(now, rng.randrange(0, 20), rng)),
                "properties": {"n": i},
            }
        )
    return out


def _identifies(pairs: list[tuple[str, str]], seed: int) -> list[dict[str, Any]]:
    now = now_us()
    rng = random.Random(seed)
    return [
        {
            "eventId": f"id{seed}-{lead}",
            "eventType": "identify",
            "anonymousId": lead,
            "timestamp": iso(safe_past(now, 1, rng)),
            "properties": {"email": email},
        }
        for lead, email in pairs
    ]


async def _snapshot(db: Any, project_id: str) -> tuple[list[Any], list[Any]]:
    """What users see, without what legitimately changes with time or epoch."""
    leads = sorted(
        (
            d["leadId"],
            d.get("merged", False),
            d.get("eventCount"),
            tuple(d.get("aliases", [])),
            d.get("email"),
            d.get("leadStage"),
            d.get("firstEventAtUs"),
            d.get("lastEventAtUs"),
            d.get("scoreAtLastEvent"),
        )
        for d in await db.leads.find({"projectId": project_id}).to_list(None)
    )
    rows = sorted(
        (
            r["leadId"],
            r["eventId"],
            r["points"],
            r["scoreBefore"],
            r["scoreAfter"],
            r.get("properties"),
        )
        for r in await db.score_history.find({"projectId": project_id}).to_list(None)
    )
    return leads, rows


async def _epochs(db: Any, project_id: str) -> set[int]:
    docs = await db.leads.find({"projectId": project_id}).to_list(None)
    return {d["version"] >> VERSION_EPOCH_BITS for d in docs}


def _replay(deployment: Deployment) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "replay"],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


async def _replay_and_restart(deployment: Deployment, worker: WorkerProcess) -> None:
    worker.stop()
    _replay(deployment)
    worker.start()
    await worker.wait_healthy()


async def _one_worker_project(
    own_deployment: Any, http: aiohttp.ClientSession, name: str
) -> tuple[Api, str]:
    """Start the deployment's worker w1 and create a project on it: (its API, its id)."""
    deployment, tmp, _, workers = own_deployment
    workers.append(await start_worker(deployment, tmp, "w1"))
    _, key = await create_project(http, workers[0].url, deployment.admin_token, name)
    api = Api(http, workers[0].url, key)
    return api, await project_id_of(api)


async def _settled(db: Any, project_id: str, expected_events: int) -> None:
    async def count() -> int:
        return await db.score_history.count_documents({"projectId": project_id})

    await eventually(count, lambda n: n == expected_events, timeout=90)


@pytest.fixture
async def own_deployment(stack: tuple[str, str], tmp_path: Path) -> Any:
    deployment = Deployment.on(stack, LEADSCORE_SESSION_TIMEOUT="10")
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack[1], tz_aware=True)
    workers: list[WorkerProcess] = []
    try:
        yield deployment, tmp_path, client[deployment.prefix], workers
    finally:
        for w in workers:
            w.kill()
        client.close()


async def test_replay_reproduces_identical_documents_including_merges(
    own_deployment: Any, http: aiohttp.ClientSession
) -> None:
    deployment, _, db, workers = own_deployment
    api, pid = await _one_worker_project(own_deployment, http, "replay")
    events = _events(240, 24, seed=11)
    identifies = _identifies(
        [
            ("lead-001", "a@x.io"),
            ("lead-002", "a@x.io"),
            ("lead-003", "b@x.io"),
            ("lead-004", "c@x.io"),
            ("lead-005", "c@x.io"),
            ("lead-006", "c@x.io"),
        ],
        seed=11,
    )
    await api.send_events(events + identifies + events[:30])  # duplicates too
    await _settled(db, pid, len(events) + len(identifies))
    await asyncio.sleep(2)  # let tombstones and promotions land
    before = await _snapshot(db, pid)
    assert sum(1 for lead in before[0] if lead[1]) == 3, "three leads merged away"

    await _replay_and_restart(deployment, workers[0])

    await eventually(lambda: _epochs(db, pid), lambda epochs: epochs == {2}, timeout=90)
    try:
        await eventually(lambda: _snapshot(db, pid), lambda after: after == before, timeout=60)
    except AssertionError:
        after = await _snapshot(db, pid)
        raise AssertionError(f"differs after the replay: {_difference(before, after)}") from None


def _difference(before: tuple[list[Any], list[Any]], after: tuple[list[Any], list[Any]]) -> Any:
    """(only before, only after) of the lead and history snapshots (rows hold dicts: compared
    as text)."""
    out = []
    for b, a in zip(before, after, strict=True):
        b_text, a_text = {repr(x) for x in b}, {repr(x) for x in a}
        out.append((sorted(b_text - a_text), sorted(a_text - b_text)))
    return out


async def test_replay_after_a_rule_change_rescores_every_event(
    own_deployment: Any, http: aiohttp.ClientSession
) -> None:
    deployment, _, db, workers = own_deployment
    api, pid = await _one_worker_project(own_deployment, http, "rescore")
    events = _events(120, 12, seed=12)
    await api.send_events(events)
    await _settled(db, pid, len(events))
    status, _ = await api.put("/api/rules/page_view", {"points": 9, "active": True})
    assert status == 200

    await _replay_and_restart(deployment, workers[0])

    rules = dict(ScoringConfig().rules)
    rules["page_view"] = Rule(9)
    ref = Reference(ScoringConfig(rules=rules))
    for e in events:
        ref.add_wire(e)
    await eventually(lambda: _epochs(db, pid), lambda epochs: epochs == {2}, timeout=90)
    await wait_mongo_matches(db, pid, ref, timeout=60)


async def _health(api: Api) -> dict[str, Any]:
    status, body = await api.get("/api/admin/system-health")
    assert status == 200, body
    return dict(body)


async def test_system_health_is_healthy_after_a_clean_run_and_degraded_when_corrupted(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    events = _events(60, 6, seed=13)
    await api.send_events(events)
    await _settled(mongo_db, pid, len(events))
    await eventually(lambda: _health(api), lambda h: h["status"] == "HEALTHY", timeout=30)

    await mongo_db.leads.update_one(
        {"projectId": pid, "leadId": "lead-001"}, {"$set": {"eventCount": 999}}
    )
    health = await _health(api)
    assert health["status"] == "DEGRADED"
    assert {"mongo_equals_tables", "one_history_row_per_event"} <= {
        v["check"] for v in health["violations"] if v["leadId"] == "lead-001"
    }

    # rebuild recomputes the lead from its stored events and repairs the document
    status, _ = await api.post("/api/admin/rebuild/lead-001")
    assert status == 202
    await eventually(lambda: _health(api), lambda h: h["status"] == "HEALTHY", timeout=30)


async def test_system_health_names_a_broken_history_chain(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    events = _events(30, 3, seed=14)
    await api.send_events(events)
    await _settled(mongo_db, pid, len(events))
    row = await mongo_db.score_history.find_one({"projectId": pid, "leadId": "lead-002"})
    await mongo_db.score_history.update_one({"_id": row["_id"]}, {"$set": {"scoreAfter": -5.0}})
    health = await _health(api)
    checks = {(v["check"], v["leadId"]) for v in health["violations"]}
    assert ("history_chain", "lead-002") in checks
    assert ("non_negative_scores", "lead-002") in checks


async def test_rescore_recomputes_every_lead_of_the_project_under_current_rules(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    events = _events(80, 8, seed=15)
    await api.send_events(events)
    await _settled(mongo_db, pid, len(events))
    status, _ = await api.put("/api/rules/email_open", {"points": 40, "active": True})
    assert status == 200
    status, _ = await api.post("/api/admin/rescore")
    assert status == 202
    rules = dict(ScoringConfig().rules)
    rules["email_open"] = Rule(40)
    ref = Reference(ScoringConfig(rules=rules))
    for e in events:
        ref.add_wire(e)
    await wait_mongo_matches(mongo_db, pid, ref, timeout=60)


async def test_three_workers_one_killed_mid_load_lose_and_double_nothing(
    own_deployment: Any, http: aiohttp.ClientSession
) -> None:
    deployment, tmp, db, workers = own_deployment
    deployment.partitions = 6
    for name in ("w1", "w2", "w3"):
        workers.append(await start_worker(deployment, tmp, name))
    _, key = await create_project(http, workers[0].url, deployment.admin_token, "scale")
    apis = [Api(http, w.url, key) for w in workers]
    pid = await project_id_of(apis[0])
    events = _events(600, 60, seed=16)
    ref = Reference()
    for e in events:
        ref.add_wire(e)

    # continuous load through the two survivors while the third is killed mid-way
    for n, start in enumerate(range(0, len(events), 50)):
        await apis[n % 2].send_events(events[start : start + 50])
        if n == 4:
            workers[2].kill()
    await wait_mongo_matches(db, pid, ref, timeout=150)

    workers[2].start()  # rejoins and gets partitions again
    await workers[2].wait_healthy()
    await apis[0].send_events(events[:50])  # duplicates after the rebalance: still counted once
    await wait_mongo_matches(db, pid, ref, timeout=120)

    # a lead read by key gives the same answer on every worker (routed to the owner)
    for lead in ref.leads()[:10]:
        bodies = []
        for api in apis:
            status, body = await api.get(f"/api/leads/{lead}")
            assert status == 200, body
            bodies.append({k: body[k] for k in ("leadId", "eventCount", "currentScore", "aliases")})
        assert bodies[0] == bodies[1] == bodies[2]


async def test_events_sent_while_workers_join_and_leave_are_each_counted_once(
    own_deployment: Any, http: aiohttp.ClientSession
) -> None:
    """Records that arrive while a rebalance resumes its streams are neither lost nor doubled.

    Load flows the whole time (5 events every ~40 ms) while the group changes four times, so
    records keep landing inside each rebalance's seek-and-resume window (docs/adr/0012).
    """
    deployment, tmp, db, workers = own_deployment
    deployment.partitions = 6
    api, pid = await _one_worker_project(own_deployment, http, "churn")
    events = _events(12_000, 80, seed=17)  # more than the load can send meanwhile
    sent: list[dict[str, Any]] = []
    membership_settled = asyncio.Event()

    async def steady_load() -> None:
        for start in range(0, len(events), 5):
            if membership_settled.is_set():
                return
            await api.send_events(events[start : start + 5])
            sent.extend(events[start : start + 5])
            await asyncio.sleep(0.04)

    async def settle() -> None:
        await asyncio.sleep(6)  # the rebalance and its table recovery happen under load
        assert not load.done(), "the load ended before the group stopped changing"

    load = asyncio.create_task(steady_load())
    try:
        workers.append(await start_worker(deployment, tmp, "w2"))
        await settle()
        workers.append(await start_worker(deployment, tmp, "w3"))
        await settle()
        workers[1].stop()
        await settle()
        workers[1].start()
        await workers[1].wait_healthy()
        await settle()
    finally:
        membership_settled.set()
        await load

    ref = Reference()
    for e in sent:
        ref.add_wire(e)
    await wait_mongo_matches(db, pid, ref, timeout=150)
