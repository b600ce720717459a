"""Failover time: kill -9 one of two workers and time until its leads are scored again.

`python -m bench.failover [--session-timeout 10 30]`. For each session timeout: two workers,
leads spread over every partition, one worker killed with SIGKILL; then one new event per lead
is sent to the survivor and the clock runs until every lead shows it (routed reads answer 503
until the group has handed the dead worker's partitions over and their tables are recovered).
Reported with the machine; the figure is dominated by the session timeout, by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

import devstack
from bench.deploy import Deployment
from bench.machine import describe

LEADS = 40


async def _count(http: aiohttp.ClientSession, url: str, key: str, lead: str) -> int | None:
    try:
        async with http.get(f"{url}/api/leads/{lead}", headers={"X-API-Key": key}) as resp:
            if resp.status != 200:
                return None
            return int((await resp.json())["eventCount"])
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _send(
    http: aiohttp.ClientSession, url: str, key: str, events: list[dict[str, Any]]
) -> None:
    async with http.post(
        f"{url}/api/events/batch", json={"events": events}, headers={"X-API-Key": key}
    ) as resp:
        assert resp.status == 202, await resp.text()


async def measure(
    bootstrap: str, mongo_url: str, session_timeout: float, workdir: Path
) -> dict[str, Any]:
    deployment = Deployment(
        bootstrap, mongo_url, f"fo{uuid.uuid4().hex[:8]}", workdir, partitions=8
    )
    await deployment.create()
    env = {"LEADSCORE_SESSION_TIMEOUT": str(session_timeout)}
    survivor, victim = deployment.worker("a", **env), deployment.worker("b", **env)
    try:
        for w in (survivor, victim):
            w.start()
        for w in (survivor, victim):
            await w.wait_healthy()
        key, url = deployment.api_key, survivor.url
        leads = [f"lead-{i:03d}" for i in range(LEADS)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await _send(
                http, url, key, [{"eventType": "page_view", "leadId": lead} for lead in leads]
            )
            deadline = time.monotonic() + 120
            while any([await _count(http, url, key, lead) != 1 for lead in leads]):
                if time.monotonic() > deadline:
                    raise TimeoutError("warm-up events not scored")
                await asyncio.sleep(0.2)
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            await _send(
                http, url, key, [{"eventType": "email_open", "leadId": lead} for lead in leads]
            )
            pending = set(leads)
            first_blocked = 0
            while pending:
                for lead in list(pending):
                    if await _count(http, url, key, lead) == 2:
                        pending.discard(lead)
                if time.monotonic() - killed > 300:
                    raise TimeoutError(f"{len(pending)} leads not recovered in 300 s")
                first_blocked = first_blocked or len(pending)
                await asyncio.sleep(0.2)
            recovered = time.monotonic() - killed
        return {
            "sessionTimeoutS": session_timeout,
            "failoverS": round(recovered, 2),
            "leadsBlockedAtKill": first_blocked,
            "leads": LEADS,
        }
    finally:
        deployment.stop_all()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--session-timeout", type=float, nargs="+", default=[10.0, 30.0])
    args = parser.parse_args()
    info = devstack.ensure_up()
    workdir = Path(tempfile.mkdtemp(prefix="lsfailover-"))
    try:
        results = [
            await measure(info.bootstrap_servers, info.mongo_url, t, workdir)
            for t in args.session_timeout
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if info.started and not os.environ.get("LEADSCORE_KEEP_STACK"):
            devstack.shutdown()
    print(json.dumps({"machine": describe(), "failover": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
