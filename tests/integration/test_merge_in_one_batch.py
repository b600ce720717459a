"""A lead's merge and its own events in ONE scoring batch: the sink must see the lead's rows
before its removal, or it writes them back under the merged key (the replay defect CI found in
session 7: "1 score_history rows left under the alias").

The records are put on the topics while the worker is stopped, so that its first fetch takes
them together: the lead's events (through an ingest process), then a `merge` for it (produced
as the identity agent would). The sink writes one change per batch here: its batches coalesce
(a removal is written after every row of the batch), which hides the order unless the removal
and the rows fall into different sink batches — as they did, rarely, under load.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app import wire
from app.partitioning import partition_for
from tests.integration.support import (
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    eventually,
    iso,
    now_us,
    produce_raw,
    start_worker,
)

pytestmark = pytest.mark.integration

EVENTS = 30
HOUR_US = 3_600_000_000


@pytest.fixture
async def worker_and_ingest(
    stack: tuple[str, str], work_dir: Path
) -> AsyncIterator[tuple[Deployment, WorkerProcess, WorkerProcess]]:
    # the sink writes each change on its own (see the module docstring)
    deployment = Deployment.on(stack, LEADSCORE_SINK_BATCH="1")
    worker = await start_worker(deployment, work_dir, "merge-batch")
    ingest = WorkerProcess(deployment, work_dir, "merge-batch-ingest", command="ingest")
    ingest.start()
    try:
        await ingest.wait_healthy()
        yield deployment, worker, ingest
    finally:
        ingest.stop()
        worker.stop()


async def _rows(db: Any, project_id: str, lead: str) -> int:
    return int(await db.score_history.count_documents({"projectId": project_id, "leadId": lead}))


async def test_a_merge_read_after_the_lead_s_own_events_leaves_no_rows_under_it(
    worker_and_ingest: tuple[Deployment, WorkerProcess, WorkerProcess],
    http: aiohttp.ClientSession,
) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    deployment, worker, ingest = worker_and_ingest
    project_id, key = await create_project(
        http, worker.url, deployment.admin_token, "merge-in-one-batch"
    )
    via_ingest = Api(http, ingest.url, key)
    first = {"eventId": "v-0", "eventType": "page_view", "leadId": "visitor"}
    # the ingest process learns of the new project from the projects topic
    await eventually(
        lambda: via_ingest.post("/api/events", {**first, "timestamp": iso(now_us() - HOUR_US)}),
        lambda reply: reply[0] == 202,
        timeout=60,
        interval=0.5,
    )
    worker.stop()

    start = now_us() - HOUR_US
    await via_ingest.send_events(
        [
            {
                "eventId": f"v-{i}",
                "eventType": "page_view",
                "leadId": "visitor",
                "timestamp": iso(start + i),
            }
            for i in range(1, EVENTS)
        ]
    )
    merge = wire.Merge(
        project_id=project_id,
        into="owner",
        email="owner@example.com",
        timestamp=start,
        event_id="owner-identify",
        epoch=1,  # the deployment's app version
    )
    visitor = f"{project_id}:visitor".encode()
    partition = partition_for(visitor, deployment.partitions)
    await produce_raw(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.lead-commands",
        [(visitor, wire.encode(merge))],
        partition=partition,
    )
    worker.start()
    await worker.wait_healthy()

    api = Api(http, worker.url, key)
    client: Any = AsyncIOMotorClient(deployment.mongo_url, tz_aware=True)
    db = client[deployment.prefix]
    try:
        # every event counts for the owner: absorbed with the lead, or forwarded as an alias's
        await eventually(lambda: _rows(db, project_id, "owner"), lambda n: n == EVENTS, 120, 0.3)
        await eventually(
            lambda: db.leads.find_one({"projectId": project_id, "leadId": "visitor"}),
            lambda doc: doc is not None and doc.get("merged") is True,
        )
        # a lead of the visitor's partition, scored after the merge: once the sink has written
        # it, it has written every change the merge's batch made before it
        marker = next(
            f"marker-{n}"
            for n in range(1_000)
            if partition_for(f"{project_id}:marker-{n}".encode(), deployment.partitions)
            == partition
        )
        status, reply = await api.post("/api/events", {"eventType": "page_view", "leadId": marker})
        assert status == 202, reply
        await eventually(
            lambda: db.leads.find_one({"projectId": project_id, "leadId": marker}),
            lambda doc: doc is not None,
        )
        assert await _rows(db, project_id, "visitor") == 0
        status, lead = await api.get("/api/leads/visitor")
        assert status == 200 and lead["leadId"] == "owner", lead
        assert lead["eventCount"] == EVENTS, lead
    finally:
        client.close()
