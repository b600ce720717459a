"""Real destinations for the automation tests: aiohttp receivers on 127.0.0.1 that answer as
told (200, fail N times, 429 with Retry-After, hang, 4xx), an SMTP server (aiosmtpd), and a
worker deployment whose delivery schedule is fast enough to test (seconds, not an hour)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from tests.integration.support import (
    Api,
    eventually,
    free_port,
)

# The worker's "now" in these tests (LEADSCORE_NOW): events are sent with explicit timestamps on
# the day before and on this day, so "once per day" is tested without waiting for midnight.
NOW = "2026-11-20T12:00:00Z"
YESTERDAY = "2026-11-19"
TODAY = "2026-11-20"


def fast_delivery_env(smtp_port: int) -> dict[str, str]:
    return {
        "LEADSCORE_NOW": NOW,
        "LEADSCORE_MAX_AUTOMATIONS": "8",
        "LEADSCORE_DELIVERY_BACKOFF": "0.3",
        "LEADSCORE_DELIVERY_BACKOFF_MAX": "1",
        "LEADSCORE_DELIVERY_ATTEMPTS": "4",
        "LEADSCORE_DELIVERY_TIMEOUT": "2",
        "LEADSCORE_DELIVERY_POLL": "0.2",
        "LEADSCORE_BREAKER_FAILURES": "50",
        "LEADSCORE_BREAKER_COOLDOWN": "1",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_TLS": "none",
        "SMTP_FROM": "leadscore@test.example",
    }


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers.get("X-Leadscore-Delivery", "")


@dataclass
class Behaviour:
    """How a path answers: `fail` times with `status` (and `retry_after`), then 200 (after
    `delay` seconds); or hang."""

    fail: int = 0
    status: int = 500
    retry_after: str | None = None
    hang: bool = False
    delay: float = 0.0
    seen: int = 0


@dataclass
class Receiver:
    """One HTTP server; each path behaves as configured (default: 200)."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def distinct(self, path: str) -> Counter[str]:
        return Counter(r.delivery for r in self.at(path))

    def release(self) -> None:
        """Let hanging requests finish (their attempts have long timed out)."""
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body))
        b = self.behaviours.get(request.path)
        if b is not None:
            b.seen += 1
            if b.hang:
                await self._release.wait()
                return web.Response(text="late")
            if b.seen <= b.fail:
                headers = {"Retry-After": b.retry_after} if b.retry_after else {}
                return web.Response(status=b.status, text="not now", headers=headers)
            if b.delay:
                await asyncio.sleep(b.delay)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = _Mailbox()
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README receiver example's check (test_automation_delivery runs the snippet itself):
    parse `t=…,v1=…`, recompute the HMAC of
    "{t}.{raw body}", compare in constant time, and refuse old timestamps (replays)."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - int(parts["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected.hexdigest(), parts["v1"])


async def create_rule(api: Api, rule: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.post("/api/automations", rule)
    assert status == 201, body
    return dict(body)


async def firings(api: Api, rule_id: str, status: str | None = None) -> list[dict[str, Any]]:
    query = f"?status={status}" if status else ""
    code, body = await api.get(f"/api/automations/{rule_id}/firings{query}")
    assert code == 200, body
    return list(body["firings"])


async def wait_firings(
    api: Api, rule_id: str, n: int, status: str | None = None, timeout: float = 60
) -> list[dict[str, Any]]:
    return await eventually(
        lambda: firings(api, rule_id, status), lambda f: len(f) >= n, timeout=timeout
    )


def event(lead: str, event_type: str, ts: str, event_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"leadId": lead, "eventType": event_type, "timestamp": ts}
    if event_id is not None:
        out["eventId"] = event_id
    return out
