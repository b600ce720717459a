"""Two workers (issue #15): a single-lead read proxied to the owning worker keeps its request
id in the owner's log, and a lead owned by the other worker is erased through this one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.support import (
    Api,
    Deployment,
    create_project,
    eventually,
    start_worker,
)


def request_ids(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        try:
            rid = json.loads(line).get("request_id")
        except ValueError:
            continue
        if rid:
            out.add(rid)
    return out


async def test_proxied_reads_keep_their_request_id_and_erasure_reaches_the_owner(
    stack: tuple[str, str], http: aiohttp.ClientSession, work_dir: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_LOG_FORMAT="json", LEADSCORE_SESSION_TIMEOUT="10")
    one = await start_worker(deployment, work_dir, "two-a")
    two = None
    try:
        two = await start_worker(deployment, work_dir, "two-b")
        _, key = await create_project(http, one.url, deployment.admin_token, "two")
        api = Api(http, one.url, key)
        leads = [f"t{uuid.uuid4().hex[:4]}-{n}" for n in range(8)]
        await api.send_events(
            [{"eventId": f"{lead}-e", "eventType": "signup", "leadId": lead} for lead in leads]
        )

        async def owners() -> dict[str, str]:
            found: dict[str, str] = {}
            for lead in leads:
                rid = f"rid-{lead}-{uuid.uuid4().hex[:6]}"
                async with http.get(
                    f"{one.url}/api/leads/{lead}", headers={"X-API-Key": key, "X-Request-Id": rid}
                ) as r:
                    if r.status != 200 or r.headers["X-Request-Id"] != rid:
                        return {}
                assert two is not None
                found[lead] = "two" if rid in request_ids(two.log_path) else "one"
            return found

        found: dict[str, Any] = await eventually(
            owners, lambda f: len(f) == len(leads) and "two" in f.values(), timeout=120
        )
        victim = next(lead for lead, owner in found.items() if owner == "two")
        status, _ = await api.request("DELETE", f"/api/leads/{victim}")
        assert status == 202
        for url in (one.url, two.url):
            await eventually(
                lambda u=url: api.at(u).get(f"/api/leads/{victim}"),
                lambda r: r[0] == 404,
                timeout=60,
            )
        for lead in leads:
            if lead != victim:
                assert (await api.get(f"/api/leads/{lead}"))[0] == 200
    finally:
        if two is not None:
            two.stop()
        one.stop()
