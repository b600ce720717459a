"""`leadscore purge-erased` (ADR 0020): after an erasure, the raw events of the erased lead
leave the events topic; every other record stays (same partition, key and timestamp), and the
workers rebuild the same state from the rewritten log."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.support import ROOT, consume_all, eventually
from tests.integration.test_replay_and_scaling import (
    _epochs,
    _one_worker_project,
    _settled,
    _snapshot,
    own_deployment,  # noqa: F401 — the fixture
)


async def _records_left(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        first = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - first[tp] for tp in tps)
    finally:
        await consumer.stop()


async def test_purge_erased_rewrites_the_events_topic_without_the_erased_lead(
    own_deployment: Any,  # noqa: F811
    http: aiohttp.ClientSession,
) -> None:
    deployment, _, db, workers = own_deployment
    api, pid = await _one_worker_project(own_deployment, http, "purge")
    tag = uuid.uuid4().hex[:6]
    events = [
        {"eventId": f"{tag}-{lead}-{i}", "eventType": "page_view", "leadId": lead}
        for lead in ("gone", "stays-1", "stays-2")
        for i in range(3)
    ]
    await api.send_events(events)
    await _settled(db, pid, len(events))
    status, _ = await api.request("DELETE", "/api/leads/gone")
    assert status == 202
    await eventually(lambda: api.get("/api/leads/gone"), lambda r: r[0] == 404, timeout=60)
    await _settled(db, pid, 6)
    before = await _snapshot(db, pid)
    topic = f"{deployment.prefix}.events"
    original = await consume_all(
        deployment.bootstrap_servers, topic, lambda r: True, lambda f: len(f) >= 9
    )

    workers[0].stop()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "purge-erased"],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "3 of 9 event records removed" in done.stdout, done.stdout

    left = await consume_all(
        deployment.bootstrap_servers, topic, lambda r: True, lambda f: len(f) >= 6
    )
    assert len(left) == 6 and not any(b":gone" in r.key for r in left)

    def sig(r: Any) -> tuple[Any, ...]:
        return (r.partition, r.key, r.value, r.timestamp)

    assert sorted(map(sig, left)) == sorted(sig(r) for r in original if b":gone" not in r.key)
    for name in ("lead-commands", "identity-claims"):
        topic_name = f"{deployment.prefix}.{name}"
        left_over = await _records_left(
            deployment.bootstrap_servers, topic_name, deployment.partitions
        )
        assert left_over == 0, (name, left_over)

    workers[0].start()
    await workers[0].wait_healthy()
    await eventually(lambda: _epochs(db, pid), lambda e: e == {2}, timeout=90)
    await eventually(lambda: _snapshot(db, pid), lambda got: got == before, timeout=90)
    assert (await api.get("/api/leads/gone"))[0] == 404
