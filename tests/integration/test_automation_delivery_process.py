"""`leadscore deliver`: automation firings decided and delivered in a process and consumer group
of its own, next to workers run with LEADSCORE_DELIVERY=off — the workers only produce the
candidates; nothing is decided until a delivery process runs, and a delivery process killed
with SIGKILL mid-stream and restarted still delivers every firing id (at least once), none
twice decided."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.integration.automation_support import (
    TODAY,
    Receiver,
    SmtpServer,
    create_rule,
    event,
    fast_delivery_env,
    firings,
    wait_firings,
)
from tests.integration.support import (
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    eventually,
)

pytestmark = pytest.mark.integration

SECRET = "process-secret-0123456789"


async def test_a_delivery_process_decides_and_delivers_what_delivery_less_workers_score(
    stack: tuple[str, str],
    smtp: SmtpServer,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    deployment = Deployment.on(stack, **fast_delivery_env(smtp.port), LEADSCORE_DELIVERY="off")
    worker = WorkerProcess(deployment, tmp_path, "w1")
    deliver = WorkerProcess(deployment, tmp_path, "deliver", command="deliver")
    worker.start()
    try:
        await worker.wait_healthy()
        _, key = await create_project(http, worker.url, deployment.admin_token, "deliver-process")
        api = Api(http, worker.url, key)
        rule = await create_rule(
            api,
            {
                "name": "process",
                "trigger": {"kind": "event", "eventType": "signup"},
                "action": {"type": "webhook", "url": receiver.url("/proc"), "secret": SECRET},
            },
        )
        first = [event(f"p{n}", "signup", f"{TODAY}T09:00:00Z", f"p{n}") for n in range(20)]
        await api.send_events(first)
        await eventually(lambda: api.get("/api/leads/p19"), lambda r: r[0] == 200)
        # the worker scored them, but decides and delivers nothing without a delivery process
        assert await firings(api, rule["id"]) == []
        assert receiver.at("/proc") == []

        deliver.start()
        await deliver.wait_healthy()
        await wait_firings(api, rule["id"], 20, status="delivered")

        # killed mid-stream, restarted: its consumer group resumes, first-wins drops redos
        second = [event(f"q{n}", "signup", f"{TODAY}T10:00:00Z", f"q{n}") for n in range(40)]
        await api.send_events(second)
        deliver.kill()
        deliver.start()
        await deliver.wait_healthy()
        found = await wait_firings(api, rule["id"], 60, status="delivered", timeout=120)
        assert len(found) == 60 and len({f["id"] for f in found}) == 60
        delivered = receiver.distinct("/proc")
        assert set(delivered) == {f["id"] for f in found}  # every firing id, none other
    finally:
        deliver.kill()
        worker.kill()
