"""SPEC 12 / ADR 0015: a temporary fault (disk full, broker unreachable, MongoDB down) is retried
until it passes — never dead-lettered, never committed past, never counted twice. Faults are made
for real where a private stack allows it, else injected at the point where real hardware raises
them (LEADSCORE_TEST_FAULTS, a test-only hook of app/faults.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.support import (
    Api,
    Deployment,
    api_mismatches,
    create_project,
    dead_letter_count,
    eventually,
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
        assert await api_mismatches(traffic.api, traffic.ref) == []
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
