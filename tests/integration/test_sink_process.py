"""`leadscore sink`: the MongoDB sink in a process and consumer group of its own, next to workers
run with LEADSCORE_SINK=off — MongoDB gets exactly what the tables hold, also when the sink
process is killed and restarted."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    WorkerProcess,
    api_mismatches,
    create_project,
    eventually,
    iso,
    now_us,
    safe_past,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration


def _events(tag: str, count: int, rng: random.Random, now: int) -> list[dict[str, Any]]:
    return [
        {
            "eventId": f"{tag}-{n}",
            "eventType": rng.choice(["page_view", "signup", "demo_request", "download"]),
            "leadId": f"sink-lead-{rng.randrange(8)}",
            "timestamp": iso(safe_past(now, rng.randrange(30), rng)),
        }
        for n in range(count)
    ]


async def test_a_sink_process_materializes_what_sink_less_workers_score(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_SINK="off")
    db = mongo_db.client[deployment.prefix]
    worker = WorkerProcess(deployment, tmp_path, "w1")
    sink = WorkerProcess(deployment, tmp_path, "sink", command="sink")
    worker.start()
    try:
        await worker.wait_healthy()
        pid, key = await create_project(http, worker.url, deployment.admin_token, "sink-process")
        api = Api(http, worker.url, key)
        rng = random.Random(3)
        now = now_us()
        ref = Reference()
        first = _events("a", 150, rng, now)
        await api.send_events(first)
        for event in first:
            ref.add_wire(event)
        await eventually(lambda: api_mismatches(api, ref), lambda diffs: not diffs)
        # the worker has no sink: nothing reaches MongoDB until a sink process runs
        assert await db.leads.count_documents({"projectId": pid}) == 0

        sink.start()
        await sink.wait_healthy()
        await wait_mongo_matches(db, pid, ref)

        # a sink killed mid-stream resumes from its group's committed offsets
        second = _events("b", 300, rng, now)
        await api.send_events(second)
        for event in second:
            ref.add_wire(event)
        sink.kill()
        sink.start()
        await sink.wait_healthy()
        await wait_mongo_matches(db, pid, ref)
        distinct = sum(len(events) for events in ref.events.values())
        assert await db.score_history.count_documents({"projectId": pid}) == distinct
    finally:
        sink.stop()
        worker.stop()
