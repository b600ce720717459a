"""Integration-test support: real worker processes, an HTTP client, and polling helpers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
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
    """A `leadscore worker` subprocess with its own port and data dir."""

    def __init__(self, deployment: Deployment, tmp: Path, name: str) -> None:
        self.deployment = deployment
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
            [sys.executable, "-m", "app.cli", "worker"],
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
        hdrs = {"X-API-Key": self.api_key} if self.api_key else {}
        hdrs.update(headers or {})
        async with self.http.request(
            method, f"{self.base_url}{path}", json=body, headers=hdrs
        ) as resp:
            text = await resp.text()
            try:
                import json

                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

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
