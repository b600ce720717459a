"""`/metrics` on every process role moves as events flow (issue #15, SPEC 11).

Scrape before, send events over HTTP (one a duplicate) and a record that is not JSON straight
to the events topic, scrape again: the counters of consumption, scoring, dead letters, the sink
and HTTP moved, and the lag gauge lists the events topic's partitions.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support import (
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    eventually,
    project_id_of,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_worker_metrics_move_as_events_flow(
    http: aiohttp.ClientSession, api: Api, worker: WorkerProcess, deployment: Deployment
) -> None:
    before = await scrape(http, worker.url)
    pid = await project_id_of(api)
    lead = f"m-{uuid.uuid4().hex[:8]}"
    events = [
        {"eventId": f"{lead}-{i}", "eventType": "page_view", "leadId": lead} for i in range(5)
    ]
    await api.send_events(events)
    await api.send_events(events[:1])  # a duplicate eventId: consumed, not scored again
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{deployment.prefix}.events", key=f"{pid}:{lead}".encode(), value=b"{not json"
        )
    finally:
        await producer.stop()

    def done(after: Samples) -> bool:
        return (
            moved(before, after, "leadscore_events_scored_total", outcome="scored") >= 5
            and moved(before, after, "leadscore_events_scored_total", outcome="duplicate") >= 1
            and moved(before, after, "leadscore_dead_letters_total", reason="invalid JSON") >= 1
            and moved(before, after, "leadscore_sink_batch_size_count") >= 1
        )

    after = await eventually(lambda: scrape(http, worker.url), done, timeout=90)
    assert moved(before, after, "leadscore_events_consumed_total", source="events") >= 7
    assert moved(before, after, "leadscore_processing_seconds_count") >= 7
    assert moved(before, after, "leadscore_sink_batch_size_sum") >= 1
    assert moved(before, after, "leadscore_sink_batch_seconds_count") >= 1
    assert (
        moved(
            before,
            after,
            "leadscore_http_requests_total",
            method="POST",
            route="/api/events/batch",
            status="202",
        )
        == 2
    )
    assert moved(
        before,
        after,
        "leadscore_http_request_seconds_count",
        method="POST",
        route="/api/events/batch",
    ) == 2
    partitions = {
        dict(labels)["partition"]
        for name, labels in after
        if name == "leadscore_consumer_lag" and dict(labels)["topic"] == "events"
    }
    assert partitions == {str(p) for p in range(deployment.partitions)}, partitions
    # a lead read is labelled with its route template, never the lead id
    status, _ = await api.get(f"/api/leads/{lead}")
    assert status == 200
    last = await scrape(http, worker.url)
    routes = {dict(labels).get("route") for name, labels in last if "http" in name}
    assert "/api/leads/{lead_id}" in routes
    assert not any(lead in str(r) for r in routes)
    for name, labels in last:
        assert not any(pid in v or lead in v for _, v in labels), (name, labels)


async def test_ingest_process_serves_its_own_metrics(
    http: aiohttp.ClientSession, api: Api, deployment: Deployment, work_dir: Path
) -> None:
    ingest = WorkerProcess(deployment, work_dir, f"ingest-{uuid.uuid4().hex[:6]}", "ingest")
    ingest.start()
    try:
        await ingest.wait_healthy()
        before = await scrape(http, ingest.url)
        status, body = await api.at(ingest.url).post(
            "/api/events", {"eventType": "signup", "leadId": "ingest-metrics"}
        )
        assert status == 202, body
        after = await scrape(http, ingest.url)
        assert (
            moved(
                before,
                after,
                "leadscore_http_requests_total",
                method="POST",
                route="/api/events",
                status="202",
            )
            == 1
        )
        # defined on every role, at zero where the role does no such work
        assert any(name == "leadscore_sink_batch_size_count" for name, _ in after)
    finally:
        ingest.stop()


async def test_rate_limit_refusals_are_counted_by_credential_kind(
    stack: tuple[str, str], http: aiohttp.ClientSession, work_dir: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_RATE_LIMIT="3/minute")
    proc = WorkerProcess(deployment, work_dir, f"limited-{uuid.uuid4().hex[:6]}")
    proc.start()
    try:
        await proc.wait_healthy()
        _, key = await create_project(http, proc.url, deployment.admin_token, "limited")
        api = Api(http, proc.url, key)
        before = await scrape(http, proc.url)
        statuses = [(await api.get("/api/rules"))[0] for _ in range(5)]
        assert statuses.count(429) >= 2, statuses
        after = await scrape(http, proc.url)
        assert moved(before, after, "leadscore_rate_limited_total", credential="key") == (
            statuses.count(429)
        )
        assert moved(
            before,
            after,
            "leadscore_http_requests_total",
            method="GET",
            route="/api/rules",
            status="429",
        ) == statuses.count(429)
    finally:
        proc.stop()
