"""Integration-test support: real worker processes, an HTTP client, and polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_prefix(tag: str = "it") -> str:
    return f"{tag}{uuid.uuid4().hex[:8]}"


@dataclass
class Deployment:
    """One leadscore deployment under test: its own topics, consumer group and database."""

    bootstrap_servers: str
    mongo_url: str
    prefix: str = field(default_factory=unique_prefix)
    partitions: int = 4
    admin_token: str = "test-admin-token"
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on(cls, stack: tuple[str, str], **extra_env: str) -> Deployment:
        """A new deployment on the test stack `(bootstrap servers, MongoDB URL)`, with settings."""
        return cls(bootstrap_servers=stack[0], mongo_url=stack[1], extra_env=extra_env)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            MONGO_URL=self.mongo_url,
            MONGO_DB=self.prefix,
            LEADSCORE_TOPIC_PREFIX=self.prefix,
            LEADSCORE_PARTITIONS=str(self.partitions),
            LEADSCORE_ADMIN_TOKEN=self.admin_token,
            LEADSCORE_SINK_WITHIN="0.1",
            LOG_LEVEL="info",
        )
        env.update(self.extra_env)
        return env


class WorkerProcess:
    """A `leadscore worker` (or `ingest`) subprocess with its own port and data dir."""

    def __init__(
        self, deployment: Deployment, tmp: Path, name: str, command: str = "worker"
    ) -> None:
        self.deployment = deployment
        self.command = command  # `leadscore worker` or `leadscore ingest`
        self.port = free_port()
        self.datadir = tmp / f"{deployment.prefix}-{name}"
        self.log_path = tmp / f"{deployment.prefix}-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.deployment.env()
        env.update(WEB_PORT=str(self.port), LEADSCORE_DATA_DIR=str(self.datadir))
        log = open(self.log_path, "ab")  # noqa: SIM115 — handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", self.command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited {self.proc.returncode}: {self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/api/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
        raise TimeoutError(f"worker not healthy in {timeout}s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Api:
    """A small JSON client for one worker and one API key."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, api_key: str = "") -> None:
        self.http = http
        self.base_url = base_url
        self.api_key = api_key

    def with_key(self, api_key: str) -> Api:
        return Api(self.http, self.base_url, api_key)

    def at(self, base_url: str) -> Api:
        return Api(self.http, base_url, self.api_key)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, _, reply = await self.request_full(method, path, body, headers)
        return status, reply

    async def request_full(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """Like `request`, with the response headers too (Retry-After, ...)."""
        hdrs = {"X-API-Key": self.api_key} if self.api_key else {}
        hdrs.update(headers or {})
        async with self.http.request(
            method, f"{self.base_url}{path}", json=body, headers=hdrs
        ) as resp:
            text = await resp.text()
            try:
                import json

                return resp.status, dict(resp.headers), json.loads(text) if text else None
            except ValueError:
                return resp.status, dict(resp.headers), text

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.request("PUT", path, body)

    async def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(events), 500):
            status, body = await self.post(
                "/api/events/batch", {"events": events[start : start + 500]}
            )
            assert status == 202, body
            ids.extend(body["eventIds"])
        return ids


async def create_project(
    http: aiohttp.ClientSession, base_url: str, token: str, name: str
) -> tuple[str, str]:
    async with http.post(
        f"{base_url}/api/projects",
        json={"name": name},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return body["projectId"], body["apiKey"]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    timeout: float = 60.0,
    interval: float = 0.3,
) -> T:
    """Poll `probe` until `check` holds; on timeout fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not check(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


# -- helpers of the pipeline tests (tests/integration/test_pipeline_*.py) --------------------

from core.config import ScoringConfig, default_config  # noqa: E402
from core.lead import HistoryRow, NewEvent, score_events  # noqa: E402
from core.scoring import decay, in_velocity_window, report, stage_for, velocity_score  # noqa: E402
from core.timeutil import (  # noqa: E402
    US_PER_DAY,
    US_PER_SECOND,
    format_timestamp,
    from_datetime,
    parse_timestamp,
)


def now_us() -> int:
    return time.time_ns() // 1_000


def iso(us: int) -> str:
    return format_timestamp(us)


def safe_past(now: int, days: int, rng: Any) -> int:
    """A whole-second timestamp `days` days and 1-23 h before `now`: the floor of its age in days
    (so its decay and its 24 h window membership) stays the same for the next hour."""
    offset = rng.randint(3_600, 23 * 3_600) * US_PER_SECOND
    return (now // US_PER_SECOND) * US_PER_SECOND - days * US_PER_DAY - offset


async def project_id_of(api: Api) -> str:
    status, body = await api.get("/api/projects/current")
    assert status == 200, body
    return str(body["projectId"])


@dataclass
class ExpectedLead:
    lead_id: str
    rows: list[HistoryRow]
    current_score: float  # rounded, at `now`
    stage: str
    events_last_24h: int

    @property
    def event_count(self) -> int:
        return len(self.rows)

    @property
    def first(self) -> int:
        return self.rows[0].timestamp

    @property
    def last(self) -> int:
        return self.rows[-1].timestamp


class Reference:
    """SPEC 3/4 computed from scratch with `core.lead.score_events` over what a test sent.

    `add` in log order: the first occurrence of an eventId of a lead wins. Points are fixed when
    an event is added (the rules in force when it is scored), unless given.
    """

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or default_config()
        self.events: dict[str, dict[str, NewEvent]] = {}

    def add(
        self,
        lead: str,
        event_id: str,
        event_type: str,
        timestamp: int,
        points: int | None = None,
    ) -> None:
        per_lead = self.events.setdefault(lead, {})
        if event_id not in per_lead:
            pts = self.config.points_for(event_type) if points is None else points
            per_lead[event_id] = NewEvent(timestamp, event_id, event_type, pts)

    def add_wire(self, event: dict[str, Any], points: int | None = None) -> None:
        """Add an event in the JSON shape sent to the API (explicit eventId and timestamp)."""
        lead = event.get("leadId") or event["anonymousId"]
        event_type = event.get("eventType") or event["event"]
        self.add(lead, event["eventId"], event_type, parse_timestamp(event["timestamp"]), points)

    def expected(self, lead: str, now: int, config: ScoringConfig | None = None) -> ExpectedLead:
        config = config or self.config
        _, rows = score_events(self.events[lead].values(), config)
        last = rows[-1]
        gap = now - last.timestamp
        current = decay(last.score_after, gap, config.grace_days, config.daily_rate)
        return ExpectedLead(
            lead_id=lead,
            rows=rows,
            current_score=report(current),
            stage=stage_for(current, config.thresholds),
            events_last_24h=sum(1 for r in rows if in_velocity_window(r.timestamp, now)),
        )

    def leads(self) -> list[str]:
        return sorted(self.events)


def _us(value: Any) -> int:
    """A timestamp as microseconds: from a BSON datetime or an ISO string."""
    return parse_timestamp(value) if isinstance(value, str) else from_datetime(value)


def lead_mismatches(doc: dict[str, Any] | None, exp: ExpectedLead) -> list[str]:
    """Differences between a lead (MongoDB doc or API body) and the reference; [] if none."""
    if doc is None:
        return [f"{exp.lead_id}: no lead"]
    out: list[str] = []

    def differ(name: str, got: Any, want: Any) -> None:
        if got != want:
            out.append(f"{exp.lead_id}.{name}: got {got!r}, want {want!r}")

    differ("leadId", doc.get("leadId"), exp.lead_id)
    differ("eventCount", doc.get("eventCount"), exp.event_count)
    if doc.get("firstEventAt") is not None and doc.get("lastEventAt") is not None:
        differ("firstEventAt", iso(_us(doc["firstEventAt"])), iso(exp.first))
        differ("lastEventAt", iso(_us(doc["lastEventAt"])), iso(exp.last))
    else:
        out.append(f"{exp.lead_id}: no firstEventAt/lastEventAt in {doc!r}")
    score = doc.get("currentScore")
    if not isinstance(score, int | float) or abs(score - exp.current_score) > 0.01 + 1e-9:
        out.append(f"{exp.lead_id}.currentScore: got {score!r}, want {exp.current_score!r}")
    differ("leadStage", doc.get("leadStage"), exp.stage)
    differ("eventsLast24h", doc.get("eventsLast24h"), exp.events_last_24h)
    differ("velocityScore", doc.get("velocityScore"), velocity_score(exp.events_last_24h))
    return out


def history_mismatches(rows: list[dict[str, Any]], exp: ExpectedLead) -> list[str]:
    """Differences between history rows (MongoDB or timeline API, in order) and the reference."""
    got_ids = [r.get("eventId") for r in rows]
    want_ids = [r.event_id for r in exp.rows]
    if got_ids != want_ids:
        return [f"{exp.lead_id}: history eventIds {got_ids!r}, want {want_ids!r}"]
    out: list[str] = []
    for got, want in zip(rows, exp.rows, strict=True):
        where = f"{exp.lead_id}/{want.event_id}"
        if got.get("eventType") != want.event_type:
            out.append(f"{where}.eventType: got {got.get('eventType')!r}, want {want.event_type!r}")
        if got.get("points") != want.points:
            out.append(f"{where}.points: got {got.get('points')!r}, want {want.points!r}")
        if _us(got["timestamp"]) != want.timestamp:
            out.append(f"{where}.timestamp: got {got['timestamp']!r}, want {iso(want.timestamp)}")
        for name, value in (("scoreBefore", want.score_before), ("scoreAfter", want.score_after)):
            g = got.get(name)
            if not isinstance(g, int | float) or abs(g - value) > 1e-9:
                out.append(f"{where}.{name}: got {g!r}, want {value!r}")
    return out


async def mongo_mismatches(
    db: Any, project_id: str, ref: Reference, leads: list[str] | None = None
) -> list[str]:
    """Every difference between MongoDB (leads + score_history) and the reference at now."""
    now = now_us()
    out: list[str] = []
    for lead in leads if leads is not None else ref.leads():
        exp = ref.expected(lead, now)
        doc = await db.leads.find_one({"projectId": project_id, "leadId": lead})
        out += lead_mismatches(doc, exp)
        rows = (
            await db.score_history.find({"projectId": project_id, "leadId": lead})
            .sort([("timestampUs", 1), ("eventId", 1)])
            .to_list(None)
        )
        out += history_mismatches(rows, exp)
    return out


async def wait_mongo_matches(
    db: Any, project_id: str, ref: Reference, timeout: float = 60.0
) -> None:
    """Poll until MongoDB agrees with the reference for every lead; fail listing the differences."""

    async def probe() -> list[str]:
        return await mongo_mismatches(db, project_id, ref)

    await eventually(probe, lambda diffs: not diffs, timeout=timeout, interval=0.5)


async def api_mismatches(api: Api, ref: Reference, leads: list[str] | None = None) -> list[str]:
    """Every difference between `GET /api/leads/{id}` (table read) and the reference at now."""
    out: list[str] = []
    for lead in leads if leads is not None else ref.leads():
        status, body = await api.get(f"/api/leads/{lead}")
        exp = ref.expected(lead, now_us())
        if status != 200:
            out.append(f"{lead}: GET /api/leads -> {status} {body!r}")
            continue
        out += lead_mismatches(body, exp)
    return out


async def start_worker(deployment: Deployment, tmp: Path, name: str) -> WorkerProcess:
    proc = WorkerProcess(deployment, tmp, name)
    proc.start()
    try:
        await proc.wait_healthy()
    except BaseException:
        proc.kill()
        raise
    return proc


async def restart_worker(proc: WorkerProcess, sig: int = signal.SIGTERM) -> None:
    """Stop a worker with `sig` and start it again with the same data dir and port."""
    proc.stop(sig)
    proc.start()
    await proc.wait_healthy()


async def consume_all(
    bootstrap_servers: str,
    topic: str,
    keep: Callable[[Any], bool],
    until: Callable[[list[Any]], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Read `topic` from the beginning (no consumer group) and collect the records `keep`
    accepts, until `until(collected)` holds or `timeout` passes."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,  # every partition, from the beginning
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        found: list[Any] = []
        while not until(found):
            if time.monotonic() > deadline:
                raise AssertionError(f"not found on {topic} in {timeout}s; collected {found!r}")
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found.extend(r for r in records if keep(r))
        return found
    finally:
        await consumer.stop()


# -- helpers of the access tests (tests/integration/test_access_*.py) ------------------------


def admin_headers(deployment: Deployment, project_id: str | None = None) -> dict[str, str]:
    """The deployment admin token; with a project id it acts as that project's owner."""
    headers = {"Authorization": f"Bearer {deployment.admin_token}"}
    if project_id is not None:
        headers["X-Project-Id"] = project_id
    return headers


async def create_key(
    api: Api, name: str, scopes: list[str], kind: str = "secret"
) -> tuple[str, str]:
    """A new key of `api`'s project (its key needs the admin scope): (key id, key)."""
    status, body = await api.post("/api/keys", {"name": name, "kind": kind, "scopes": scopes})
    assert status == 201, body
    return str(body["id"]), str(body["key"])


async def create_member(
    api: Api, deployment: Deployment, project_id: str, email: str, password: str, role: str
) -> str:
    """A user with `role` in the project, logged in: returns the session's bearer token."""
    admin = admin_headers(deployment)
    status, body = await api.with_key("").post(
        "/api/users", {"email": email, "password": password}, headers=admin
    )
    assert status == 201, body
    status, body = await api.with_key("").request(
        "PUT",
        f"/api/members/{email}",
        {"role": role},
        headers=admin_headers(deployment, project_id),
    )
    assert status == 200, body
    return await login(api, email, password)


async def login(api: Api, email: str, password: str) -> str:
    status, body = await api.with_key("").post(
        "/api/auth/login", {"email": email, "password": password}
    )
    assert status == 200, body
    return str(body["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None


async def raw_http(
    base_url: str,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    content_length: int | None = None,
    timeout: float = 30.0,
) -> RawReply:
    """One HTTP/1.1 request written byte for byte (any header bytes, any declared length), for
    inputs an HTTP client library would refuse to send; the connection is closed after it."""
    from yarl import URL

    url = URL(base_url)
    length = len(body) if content_length is None else content_length
    head = [method + b" " + target + b" HTTP/1.1", b"Host: " + (url.host or "").encode()]
    head += [name + b": " + value for name, value in headers]
    head += [b"Content-Length: " + str(length).encode(), b"Connection: close"]
    reader, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), timeout)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(_read_reply(reader), timeout)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    reply_headers: dict[str, str] = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    if reply_headers.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return RawReply(int(status_line.split()[1]), reply_headers, payload)


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes, or until a Content-Length-delimited reply is whole
    (a server answering early, e.g. 413, may not wait for the body it refused), or the head of
    an event stream."""
    data = b""
    while True:
        try:
            chunk = await reader.read(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, payload = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(payload) >= int(value):
                    return data
                if name.strip().lower() == b"content-type" and b"text/event-stream" in value:
                    return data  # a live stream (GET /api/stream) never ends: its head is the reply


def _dechunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size_line, _, payload = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += payload[:size]
        payload = payload[size + 2 :]
    return out


async def produce_raw(
    bootstrap_servers: str,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Produce records as any Kafka client could (acks=all); their (partition, offset)s."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        placed = []
        for key, value in records:
            meta = await producer.send_and_wait(topic, value, key=key, partition=partition)
            placed.append((meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


async def dead_letters(
    bootstrap_servers: str, prefix: str, keep: Callable[[dict[str, Any]], bool], count: int
) -> list[dict[str, Any]]:
    """The first `count` dead-letter records (decoded) of deployment `prefix` that `keep` takes."""
    import orjson

    found = await consume_all(
        bootstrap_servers,
        f"{prefix}.dead-letter",
        keep=lambda r: keep(orjson.loads(r.value)),
        until=lambda got: len(got) >= count,
        timeout=90,
    )
    return [orjson.loads(r.value) for r in found]


async def dead_letter_count(deployment: Deployment) -> int:
    """Records on the deployment's dead-letter topic (its end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap_servers)
    await consumer.start()
    try:
        topic = f"{deployment.prefix}.dead-letter"
        tps = [TopicPartition(topic, p) for p in range(deployment.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


@contextlib.contextmanager
def private_stack(local_dir: Path, brokers: int = 1) -> Iterator[Any]:
    """A stack of the test's own — Kafka with `brokers` nodes and a MongoDB-wire server, under
    `local_dir` on free ports — for tests that kill or stop its services without disturbing the
    shared one. It reuses the shared Kafka jar cache. devstack finds its stack through the
    environment at every call, so the environment points at this one until the block ends."""
    import shutil

    import pytest

    import devstack
    from devstack.layout import LOCAL_DIR_ENV, Layout
    from devstack.stack import KAFKA_ENV, MONGO_ENV

    shared = Layout.from_env()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOCAL_DIR_ENV, str(local_dir))
        patch.delenv(KAFKA_ENV, raising=False)
        patch.delenv(MONGO_ENV, raising=False)
        private = Layout.from_env()
        if shared.kafka_libs_stamp.is_file():
            private.kafka_libs.parent.mkdir(parents=True, exist_ok=True)
            private.kafka_libs.symlink_to(shared.kafka_libs, target_is_directory=True)
            shutil.copy(shared.kafka_libs_stamp, private.kafka_libs_stamp)
        info = devstack.ensure_up(brokers=brokers)
        try:
            assert info.started, "a private stack must be started by the test, not found running"
            yield info
        finally:
            devstack.shutdown()
