"""SPEC 9 "exactly one firing per (project, rule, lead, day), for ever": kill -9 of the worker
while deliveries are in flight, a rescore and a replay (a new epoch rebuilding every table from
the events topic) never make a firing id twice nor deliver anything about past days; the
receiver counts distinct `X-Leadscore-Delivery` ids (at least one request each)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from core.automation import firing_id
from tests.integration.automation_support import (
    TODAY,
    YESTERDAY,
    Behaviour,
    Receiver,
    SmtpServer,
    create_rule,
    event,
    fast_delivery_env,
    firings,
    wait_firings,
)
from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    eventually,
    project_id_of,
    restart_worker,
    start_worker,
)

pytestmark = pytest.mark.integration

LEADS = [f"k{n}" for n in range(6)]


@pytest.fixture
async def own(
    stack: tuple[str, str], smtp: SmtpServer, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, WorkerProcess, Any]]:
    deployment = Deployment.on(
        stack, **{**fast_delivery_env(smtp.port), "LEADSCORE_SESSION_TIMEOUT": "10"}
    )
    worker = await start_worker(deployment, tmp_path, "w1")
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack[1], tz_aware=True)
    try:
        yield deployment, worker, client[deployment.prefix]
    finally:
        worker.kill()
        client.close()


async def test_kill_9_rescore_and_replay_never_fire_twice(
    own: tuple[Deployment, WorkerProcess, Any], http: aiohttp.ClientSession
) -> None:
    deployment, worker, db = own
    _, key = await create_project(http, worker.url, deployment.admin_token, "recovery")
    api = Api(http, worker.url, key)
    pid = await project_id_of(api)
    receiver = Receiver()
    await receiver.start()
    try:
        hold = Behaviour(hang=True)  # requests are held until the worker has been killed
        rule = await create_rule(
            api,
            {
                "name": "qualified",
                "trigger": {"kind": "stage_reached", "stage": "qualified"},
                "action": {
                    "type": "webhook",
                    "url": receiver.on("/k", hold),
                    "secret": "recovery-secret-0123456789",
                },
            },
        )
        events = []
        for lead in LEADS:  # qualified yesterday, and again today after dropping to hot
            events += [
                event(lead, "demo_request", f"{YESTERDAY}T13:00:00Z", f"{lead}-1"),
                event(lead, "demo_request", f"{YESTERDAY}T14:00:00Z", f"{lead}-2"),
                event(lead, "unsubscribe", f"{TODAY}T08:00:00Z", f"{lead}-3"),
                event(lead, "contract_signed", f"{TODAY}T09:00:00Z", f"{lead}-4"),
            ]
        # p: page views three days ago only; lifted into qualified by a rescore below
        events += [event("p", "page_view", "2026-11-17T10:00:00Z", f"p-{n}") for n in range(2)]
        await api.send_events(events)
        expected = {
            firing_id(pid, rule["id"], lead, day) for lead in LEADS for day in (YESTERDAY, TODAY)
        }
        # deliveries in flight (held by the receiver) when the worker dies
        await eventually(lambda: _n(receiver), lambda n: n >= 1)
        await restart_worker(worker, signal.SIGKILL)
        hold.hang = False
        receiver.release()
        await wait_firings(api, rule["id"], len(expected), status="delivered", timeout=120)
        assert set(receiver.distinct("/k")) == expected

        # a rescore under a rule that lifts p (its events three days old): skipped, not sent
        status, _ = await api.put("/api/rules/page_view", {"points": 60})
        assert status == 200
        status, _ = await api.post("/api/admin/rescore")
        assert status == 202
        [skipped] = await wait_firings(api, rule["id"], 1, status="skipped")
        assert skipped["id"] == firing_id(pid, rule["id"], "p", "2026-11-17")

        # a replay: every table rebuilt from the events topic, every trigger evaluated again
        worker.stop()
        _replay(deployment)
        worker.start()
        await worker.wait_healthy()
        await eventually(lambda: _epochs(db, pid), lambda epochs: epochs == {2}, timeout=120)
        # a new lead qualifying today after the replay: the one new firing
        await api.send_events(
            [
                event("new", "contract_signed", f"{TODAY}T10:00:00Z", "new-1"),
            ]
        )
        new_id = firing_id(pid, rule["id"], "new", TODAY)
        await eventually(lambda: _ids(receiver), lambda ids: new_id in ids, timeout=60)
        assert set(receiver.distinct("/k")) == expected | {new_id}
        every = await firings(api, rule["id"])
        assert sorted(f["id"] for f in every) == sorted(expected | {new_id, skipped["id"]})
        assert await db.automation_firings.count_documents({"projectId": pid}) == len(every)
    finally:
        await receiver.stop()


async def _n(receiver: Receiver) -> int:
    return len(receiver.at("/k"))


async def _ids(receiver: Receiver) -> set[str]:
    return set(receiver.distinct("/k"))


async def _epochs(db: Any, project_id: str) -> set[int]:
    docs = await db.leads.find({"projectId": project_id, "merged": {"$ne": True}}).to_list(None)
    return {d["version"] >> 40 for d in docs}


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
