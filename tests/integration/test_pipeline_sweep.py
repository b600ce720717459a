"""SPEC 6: the decay sweep refreshes `currentScore`, `leadStage` and the velocity fields of
materialized leads that get no new events."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.timeutil import US_PER_DAY, US_PER_HOUR, from_datetime
from tests.integration.support import (
    Api,
    Deployment,
    create_project,
    eventually,
    iso,
    now_us,
    start_worker,
)

pytestmark = pytest.mark.integration

MARGIN = 30 * 1_000_000  # how long after the first write the leads cross a boundary


async def test_spec6_sweep_refreshes_velocity_and_decayed_stage_of_idle_leads(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_SWEEP_INTERVAL="3")
    db = mongo_db.client[deployment.prefix]
    worker = await start_worker(deployment, tmp_path, "sweep")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "sweep")
        api = Api(http, worker.url, key)
        now = now_us() // 1_000_000 * 1_000_000
        leaving_window = now - US_PER_DAY + MARGIN  # leaves the 24 h window in ~30 s
        decaying = now - 8 * US_PER_DAY + MARGIN  # its 8th idle day (first decayed one) in ~30 s
        await api.send_events(
            [
                {
                    "eventId": "v1",
                    "eventType": "page_view",
                    "leadId": "leaving",
                    "timestamp": iso(leaving_window),
                },
                {
                    "eventId": "d1",
                    "eventType": "contract_signed",
                    "leadId": "decaying",
                    "timestamp": iso(decaying),
                },
                {
                    "eventId": "s1",
                    "eventType": "page_view",
                    "leadId": "steady",
                    "timestamp": iso(now - US_PER_HOUR),
                },
            ]
        )

        async def docs() -> dict[str, dict[str, Any]]:
            return {d["leadId"]: d async for d in db.leads.find({"projectId": pid})}

        first = await eventually(docs, lambda d: len(d) == 3, timeout=30)
        leaving, decay_doc = first["leaving"], first["decaying"]
        assert (leaving["eventsLast24h"], leaving["velocityScore"]) == (1, 1), leaving
        assert (decay_doc["currentScore"], decay_doc["leadStage"]) == (100.0, "qualified")

        def refreshed(d: dict[str, dict[str, Any]]) -> bool:
            return (
                d["leaving"]["eventsLast24h"] == 0
                and d["leaving"]["velocityScore"] == 0
                and d["decaying"]["leadStage"] == "hot"
            )

        after = await eventually(docs, refreshed, timeout=75, interval=1.0)
        leaving, decay_doc, steady = after["leaving"], after["decaying"], after["steady"]
        assert decay_doc["currentScore"] == 95.0  # 100 * 0.95 ** (8 - 7)
        for name in ("leaving", "decaying"):
            before_at: datetime = first[name]["computedAt"]
            assert from_datetime(after[name]["computedAt"]) > from_datetime(before_at)
            assert after[name]["eventCount"] == 1
            assert after[name]["version"] == first[name]["version"]  # a refresh, not a new event
        assert (steady["eventsLast24h"], steady["velocityScore"], steady["currentScore"]) == (
            1,
            1,
            5.0,
        )
        # The table read agrees with what the sweep materialized.
        status, body = await api.get("/api/leads/decaying")
        assert (status, body["currentScore"], body["leadStage"]) == (200, 95.0, "hot")
    finally:
        worker.stop()
