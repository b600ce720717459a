"""The Python client (sdk/python, `leadscore_client`) against the real stack and a real worker:
events it sends are scored exactly, a batch whose answer was lost is sent again and counts once,
and the Kafka mode's records are scored and land on the partition leadscore's partitioner picks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from leadscore_client import HttpTransport, LeadscoreClient, RetryableError

from app.partitioning import partition_for
from tests.integration.support import (
    Api,
    Deployment,
    WorkerProcess,
    consume_all,
    create_key,
    create_project,
    eventually,
    project_id_of,
    start_worker,
)

pytestmark = pytest.mark.integration


def _event_id(value: bytes) -> str | None:
    """The eventId of an events-topic record; None for a record that is not an event (the shared
    deployment's topic also holds the hostile records other tests produce)."""
    try:
        body = json.loads(value)
    except ValueError:
        return None
    return body.get("eventId") if isinstance(body, dict) else None


async def _lead(api: Api, key: str, events: int, email: bool = False) -> dict[str, Any]:
    """The lead once it has `events` events (and its e-mail, which identity claims a step later)."""
    _, body = await eventually(
        lambda: api.get(f"/api/leads/{key}"),
        lambda r: (
            r[0] == 200
            and r[1]["eventCount"] >= events
            and (not email or r[1].get("email") is not None)
        ),
        timeout=90,
    )
    return dict(body)


async def _close(client: LeadscoreClient) -> None:
    assert await asyncio.to_thread(client.flush, 60), "the client did not deliver in time"
    await asyncio.to_thread(client.close, 30)


async def test_events_sent_by_the_http_client_are_scored_exactly(api: Api) -> None:
    _, ingest_key = await create_key(api, "backend", ["ingest"])
    client = LeadscoreClient(ingest_key, api.base_url, flush_interval=0.2)
    client.track("signup", lead_id="crm-1", properties={"plan": "trial"})
    client.track("demo_request", lead_id="crm-1")
    client.page("https://shop.example/pricing", lead_id="crm-1")
    client.identify("Grace@Example.com", lead_id="crm-1", traits={"company": "Navy"})
    client.track("download", anonymous_id="anon-1")
    client.track("download", anonymous_id="anon-1")
    await _close(client)

    crm = await _lead(api, "crm-1", 4, email=True)
    assert crm["eventCount"] == 4
    assert crm["currentScore"] == 85.0  # 30 + 50 + 5 (+ identify: no rule)
    assert crm["leadStage"] == "hot"
    assert crm["email"] == "grace@example.com"
    assert crm["company"] == "Navy"
    anon = await _lead(api, "anon-1", 2)
    assert (anon["eventCount"], anon["currentScore"], anon["leadStage"]) == (2, 30.0, "warm")


class LosingProxy:
    """A TCP proxy in front of a worker that withholds the answers of the first `lose`
    connections: the request reaches the worker (which queues the events and answers 202), then
    the connection is cut, as when a network drops an answer on its way back."""

    def __init__(self, upstream: str, lose: int) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.lose = lose
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        losing = self.connections <= self.lose
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        upstream = asyncio.create_task(pipe(reader, up_writer))
        try:
            if losing:
                await up_reader.read(1)  # the worker has answered: the events are in Kafka
                writer.transport.abort()  # and the client never hears it
                upstream.cancel()
                up_writer.close()
            else:
                await pipe(up_reader, writer)
        finally:
            await asyncio.gather(upstream, return_exceptions=True)


async def test_a_batch_sent_again_after_a_lost_answer_counts_once(
    api: Api, deployment: Deployment
) -> None:
    _, ingest_key = await create_key(api, "backend", ["ingest"])
    proxy = LosingProxy(api.base_url, lose=1)
    url = await proxy.start()
    try:
        client = LeadscoreClient(ingest_key, url, flush_interval=0.2, retry_base=0.2)
        ids = [
            client.track("webinar_attendance", lead_id="retried"),
            client.track("form_submit", lead_id="retried"),
            client.track("email_open", lead_id="retried"),
        ]
        await _close(client)
    finally:
        await proxy.stop()
    assert proxy.connections == 2  # the lost attempt and its resend

    # both attempts reached the events topic, each with the same three eventIds
    produced = await consume_all(
        deployment.bootstrap_servers,
        f"{deployment.prefix}.events",
        keep=lambda r: _event_id(r.value) in ids,
        until=lambda found: len(found) >= 6,
        timeout=60,
    )
    assert sorted(json.loads(r.value)["eventId"] for r in produced) == sorted(ids * 2)

    lead = await _lead(api, "retried", 3)
    # a marker after them, on the same lead: once it is scored the resent copies were seen too
    status, body = await api.post("/api/events", {"eventType": "signup", "leadId": "retried"})
    assert status == 202, body
    lead = await _lead(api, "retried", 4)
    assert lead["eventCount"] == 4
    assert lead["currentScore"] == 85.0  # 25 + 20 + 10 + 30, each event once
    status, timeline = await api.get("/api/leads/retried/timeline")
    assert status == 200, timeline
    assert sorted(r["eventId"] for r in timeline["history"] if r["eventId"] in ids) == sorted(ids)


async def test_the_kafka_mode_produces_records_that_are_scored(
    api: Api, deployment: Deployment
) -> None:
    project_id = await project_id_of(api)
    topic = f"{deployment.prefix}.events"
    client = LeadscoreClient.kafka(
        deployment.bootstrap_servers, project_id, topic=topic, flush_interval=0.2
    )
    leads = {f"kafka-{i}": ["contract_signed", "pricing_page_visit"] for i in range(6)}
    ids: list[str] = []
    for lead, types in leads.items():
        ids += [client.track(t, lead_id=lead) for t in types]
    ids.append(client.identify("kafka@example.com", anonymous_id="kafka-anon"))
    await _close(client)

    for lead in leads:
        found = await _lead(api, lead, 2)
        assert (found["eventCount"], found["currentScore"], found["leadStage"]) == (
            2,
            115.0,
            "qualified",
        )
    anon = await _lead(api, "kafka-anon", 1, email=True)
    assert anon["email"] == "kafka@example.com"

    records = await consume_all(
        deployment.bootstrap_servers,
        topic,
        keep=lambda r: _event_id(r.value) in ids,
        until=lambda found: len(found) >= len(ids),
        timeout=60,
    )
    assert len(records) == len(ids)
    for record in records:
        value = json.loads(record.value)
        lead_key = value.get("leadId") or value["anonymousId"]
        assert record.key == f"{project_id}:{lead_key}".encode()
        assert value["projectId"] == project_id
        assert record.partition == partition_for(record.key, deployment.partitions)


RATE = 5  # requests a second per credential on the limited worker


@pytest.fixture(scope="module")
async def limited(
    stack: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Deployment, WorkerProcess]]:
    """A worker whose rate limit a client reaches at once: its answers include 429s."""
    deployment = Deployment.on(stack, LEADSCORE_RATE_LIMIT=f"{RATE}/second")
    proc = await start_worker(deployment, tmp_path_factory.mktemp("sdk"), "limited")
    try:
        yield deployment, proc
    finally:
        proc.stop()


class CountingTransport(HttpTransport):
    """The real HTTP transport, remembering the retryable answers it got."""

    def __init__(self, key: str, host: str) -> None:
        super().__init__(key, host)
        self.retryable: list[RetryableError] = []

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        try:
            super().send(events)
        except RetryableError as exc:
            self.retryable.append(exc)
            raise


async def test_the_client_waits_out_429_with_retry_after_and_delivers_everything_once(
    http: aiohttp.ClientSession, limited: tuple[Deployment, WorkerProcess]
) -> None:
    deployment, proc = limited
    _, key = await create_project(http, proc.url, deployment.admin_token, "sdk-429")
    api = Api(http, proc.url, key)
    transport = CountingTransport(key, proc.url)
    client = LeadscoreClient(key, transport=transport, max_batch=1, flush_interval=0)
    count = 4 * RATE  # one request each: four times what a second allows
    for i in range(count):
        client.track("email_open", lead_id="busy", event_id=f"busy-{i}")
    await _close(client)

    assert transport.retryable, "the worker never answered 429"
    assert all(str(e) == "HTTP 429" for e in transport.retryable)
    assert all(e.retry_after is not None and e.retry_after >= 1 for e in transport.retryable)
    lead = await _lead(api, "busy", count)
    assert lead["eventCount"] == count
    assert lead["currentScore"] == 10.0 * count
