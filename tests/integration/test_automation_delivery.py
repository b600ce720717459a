"""SPEC 9 delivery on real receivers: retries with backoff, Retry-After, 4xx fails at once and
is redelivered, a dead destination fails after its attempts and is redelivered with its rule,
a hanging destination slows neither scoring nor a healthy destination, and the test endpoint.

The worker runs a fast schedule (LEADSCORE_DELIVERY_BACKOFF=0.3 s, 4 attempts); the default
schedule (at least 8 attempts over at least an hour) is checked in tests/unit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from motor.motor_asyncio import AsyncIOMotorClient

from tests.integration.automation_support import (
    TODAY,
    Behaviour,
    Receiver,
    SmtpServer,
    create_rule,
    event,
    fast_delivery_env,
    wait_firings,
)
from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    create_project,
    eventually,
    free_port,
    start_worker,
)
from tests.integration.test_operability_metrics import moved, scrape

pytestmark = pytest.mark.integration

SECRET = "delivery-secret-0123456789"


def webhook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "secret": SECRET}


async def signup_rule(api: Api, name: str, url: str) -> dict[str, Any]:
    return await create_rule(
        api,
        {
            "name": name,
            "trigger": {"kind": "event", "eventType": "signup"},
            "action": webhook(url),
        },
    )


async def firing_of(api: Api, firing_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/api/firings/{firing_id}")
    assert status == 200, body
    return dict(body)


async def test_a_receiver_failing_twice_gets_the_firing_on_the_third_attempt(
    auto_api: Api, receiver: Receiver
) -> None:
    url = receiver.on("/flaky", Behaviour(fail=2, status=503))
    rule = await signup_rule(auto_api, "flaky", url)
    before = await scrape(auto_api.http, auto_api.base_url)
    await auto_api.send_events([event("f", "signup", f"{TODAY}T09:00:00Z", "f1")])
    [done] = await wait_firings(auto_api, rule["id"], 1, status="delivered")
    detail = await firing_of(auto_api, done["id"])
    assert [a["status"] for a in detail["attempts"]] == [503, 503, 200]
    assert detail["attempts"][0]["error"] == "HTTP 503"
    assert len(receiver.distinct("/flaky")) == 1  # one firing id, three requests
    assert len(receiver.at("/flaky")) == 3
    # the operator sees it too (issue 15): one firing, two attempts to retry, one delivered
    after = await scrape(auto_api.http, auto_api.base_url)
    assert moved(before, after, "leadscore_automation_firings_total", status="pending") >= 1
    assert moved(before, after, "leadscore_automation_deliveries_total", status="pending") >= 2
    assert moved(before, after, "leadscore_automation_deliveries_total", status="delivered") >= 1


async def test_429_is_retried_no_sooner_than_retry_after(auto_api: Api, receiver: Receiver) -> None:
    url = receiver.on("/busy", Behaviour(fail=1, status=429, retry_after="1"))
    rule = await signup_rule(auto_api, "busy", url)
    await auto_api.send_events([event("r", "signup", f"{TODAY}T09:00:00Z", "r1")])
    [done] = await wait_firings(auto_api, rule["id"], 1, status="delivered")
    first, second = (await firing_of(auto_api, done["id"]))["attempts"]
    assert first["status"] == 429 and second["status"] == 200
    gap = datetime.fromisoformat(second["at"]) - datetime.fromisoformat(first["at"])
    # the fast schedule alone would retry after 0.15-0.3 s; Retry-After: 1 is a floor
    assert gap.total_seconds() >= 1.0


async def test_a_4xx_fails_at_once_and_is_redelivered_on_request(
    auto_api: Api, receiver: Receiver
) -> None:
    url = receiver.on("/reject", Behaviour(fail=1, status=400))
    rule = await signup_rule(auto_api, "reject", url)
    await auto_api.send_events([event("x", "signup", f"{TODAY}T09:00:00Z", "x1")])
    [failed] = await wait_firings(auto_api, rule["id"], 1, status="failed")
    detail = await firing_of(auto_api, failed["id"])
    assert [a["status"] for a in detail["attempts"]] == [400]
    status, body = await auto_api.post(f"/api/firings/{failed['id']}/redeliver")
    assert status == 202, body
    await wait_firings(auto_api, rule["id"], 1, status="delivered")
    assert [a["status"] for a in (await firing_of(auto_api, failed["id"]))["attempts"]] == [
        400,
        200,
    ]
    status, body = await auto_api.post(f"/api/firings/{failed['id']}/redeliver")
    assert status == 409, body  # delivered: nothing to redeliver


async def test_a_dead_destination_fails_after_its_attempts_and_its_rule_is_redelivered(
    auto_api: Api,
) -> None:
    port = free_port()  # nobody listens here yet
    rule = await signup_rule(auto_api, "down", f"http://127.0.0.1:{port}/hook")
    await auto_api.send_events(
        [
            event("d1", "signup", f"{TODAY}T09:00:00Z", "d1"),
            event("d2", "signup", f"{TODAY}T09:00:00Z", "d2"),
        ]
    )
    failed = await wait_firings(auto_api, rule["id"], 2, status="failed")
    for f in failed:
        attempts = (await firing_of(auto_api, f["id"]))["attempts"]
        assert len(attempts) == 4 and all(a["error"].startswith("network") for a in attempts)
    late = Receiver(port=port)
    await late.start()
    try:
        status, body = await auto_api.post(f"/api/automations/{rule['id']}/redeliver")
        assert status == 202 and body == {"redelivering": 2}, body
        await wait_firings(auto_api, rule["id"], 2, status="delivered")
        assert set(late.distinct("/hook")) == {f["id"] for f in failed}
    finally:
        await late.stop()


async def test_a_hanging_destination_slows_neither_scoring_nor_a_healthy_destination(
    auto_api: Api, receiver: Receiver
) -> None:
    hang = Receiver()
    await hang.start()
    try:
        hanging = await signup_rule(auto_api, "hangs", hang.on("/hang", Behaviour(hang=True)))
        healthy = await signup_rule(auto_api, "healthy", receiver.url("/healthy"))
        await auto_api.send_events(
            [event(f"h{n}", "signup", f"{TODAY}T09:00:00Z", f"h{n}") for n in range(12)]
        )
        # every healthy firing is delivered while the hanging receiver still holds requests
        await wait_firings(auto_api, healthy["id"], 12, status="delivered")
        assert hang.at("/hang"), "the hanging destination was tried"
        assert not any(f["status"] == "delivered" for f in await _all(auto_api, hanging["id"]))
        # and scoring goes on
        await auto_api.send_events([event("after", "demo_request", f"{TODAY}T09:30:00Z")])
        await eventually(lambda: auto_api.get("/api/leads/after"), lambda r: r[0] == 200)
    finally:
        await hang.stop()


async def _all(api: Api, rule_id: str) -> list[dict[str, Any]]:
    status, body = await api.get(f"/api/automations/{rule_id}/firings")
    assert status == 200, body
    return list(body["firings"])


async def test_the_test_endpoint_returns_what_the_destination_answered(
    auto_api: Api, receiver: Receiver
) -> None:
    ok = await signup_rule(auto_api, "ok", receiver.url("/try-ok"))
    status, body = await auto_api.post(f"/api/automations/{ok['id']}/test")
    assert status == 200, body
    assert body["delivered"] is True and body["status"] == 200 and body["response"] == "ok"
    [sample] = receiver.at("/try-ok")
    assert sample.delivery == body["id"] and sample.json["type"] == "automation.fired"
    broken = await signup_rule(
        auto_api, "broken", receiver.on("/try-broken", Behaviour(fail=99, status=502))
    )
    status, body = await auto_api.post(f"/api/automations/{broken['id']}/test")
    assert status == 200, body
    assert body == {**body, "delivered": False, "status": 502, "response": "not now"}


def readme_receiver() -> dict[str, Any]:
    """The README's receiver example, exactly as printed there, loaded as a module."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- receiver-example:", 1)[1].split("```python\n", 1)[1]
    code = block.split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


async def test_the_readme_receiver_example_verifies_real_deliveries(auto_api: Api) -> None:
    example = readme_receiver()
    secret = "readme-secret-0123456789"
    example["SECRET"] = secret.encode()
    app = web.Application()
    app.router.add_post("/hook", example["hook"])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        rule = await create_rule(
            auto_api,
            {
                "name": "readme",
                "trigger": {"kind": "event", "eventType": "signup"},
                "action": {
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{port}/hook",
                    "secret": secret,
                },
            },
        )
        await auto_api.send_events([event("rd", "signup", f"{TODAY}T09:00:00Z", "rd1")])
        [done] = await wait_firings(auto_api, rule["id"], 1, status="delivered")
        assert example["seen"] == {done["id"]}  # accepted: the signature verified
        # a wrong secret is refused by the example (401), so the delivery fails at once
        example["SECRET"] = b"another-secret-entirely"
        await auto_api.send_events([event("rd2", "signup", f"{TODAY}T09:00:00Z", "rd2")])
        [refused] = await wait_firings(auto_api, rule["id"], 1, status="failed")
        attempts = (await firing_of(auto_api, refused["id"]))["attempts"]
        assert [a["status"] for a in attempts] == [401]
        assert example["seen"] == {done["id"]}
    finally:
        await runner.cleanup()


async def test_a_failing_destination_is_paused_by_its_breaker_and_nothing_is_dropped(
    stack: tuple[str, str], smtp: SmtpServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = {
        **fast_delivery_env(smtp.port),
        "LEADSCORE_BREAKER_FAILURES": "2",
        "LEADSCORE_BREAKER_COOLDOWN": "3600",  # stays open for the whole test
        "LEADSCORE_DELIVERY_PER_DESTINATION": "1",  # one at a time: failures in a known order
    }
    worker = await start_worker(Deployment.on(stack, **env), tmp_path, "breaker")
    down, up = Receiver(), Receiver()
    await down.start()
    await up.start()
    try:
        _, key = await create_project(http, worker.url, worker.deployment.admin_token, "breaker")
        api = Api(http, worker.url, key)
        failing = await signup_rule(api, "failing", down.on("/x", Behaviour(fail=99, status=503)))
        healthy = await signup_rule(api, "healthy", up.url("/y"))
        await api.send_events(
            [event(f"b{n}", "signup", f"{TODAY}T09:00:00Z", f"b{n}") for n in range(5)]
        )
        await wait_firings(api, healthy["id"], 5, status="delivered")

        def all_paused(found: list[dict[str, Any]]) -> bool:
            far = datetime.now(UTC) + timedelta(minutes=30)
            return len(found) == 5 and all(
                f["status"] == "pending" and datetime.fromisoformat(f["nextAttemptAt"]) > far
                for f in found
            )

        await eventually(lambda: _all(api, failing["id"]), all_paused, timeout=60)
        assert len(down.at("/x")) == 2  # two failures opened it; the rest wait, none dropped
    finally:
        worker.stop()
        await down.stop()
        await up.stop()


async def test_a_firing_that_waited_past_its_lease_is_handed_back_not_sent_twice(
    stack: tuple[str, str], smtp: SmtpServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A slow destination (one slot, 0.5 s per answer) gets a queue longer than the lease
    (1 s timeout: 11 s lease, an attempt needs 6 s of it left): firings that waited too long
    are handed back to MongoDB and claimed again instead of being sent on an expired lease —
    sent on it, the claim of the same firing by the claim loop would send it a second time."""
    env = {
        **fast_delivery_env(smtp.port),
        "LEADSCORE_DELIVERY_TIMEOUT": "1",
        "LEADSCORE_DELIVERY_PER_DESTINATION": "1",
    }
    worker = await start_worker(Deployment.on(stack, **env), tmp_path, "lease")
    slow = Receiver()
    await slow.start()
    try:
        _, key = await create_project(http, worker.url, worker.deployment.admin_token, "lease")
        api = Api(http, worker.url, key)
        rule = await signup_rule(api, "slow", slow.on("/slow", Behaviour(delay=0.5)))
        await api.send_events(
            [event(f"s{n}", "signup", f"{TODAY}T09:00:00Z", f"s{n}") for n in range(36)]
        )
        found = await wait_firings(api, rule["id"], 36, status="delivered", timeout=180)
        seen = slow.distinct("/slow")
        assert set(seen) == {f["id"] for f in found}
        assert [n for n in seen.values() if n > 1] == []  # none sent twice
        assert all(f["attemptCount"] == 1 for f in found)  # a hand-back is no attempt
    finally:
        worker.stop()
        await slow.stop()


async def test_a_graceful_stop_hands_back_the_firings_it_held(
    stack: tuple[str, str], smtp: SmtpServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """SIGTERM: firings waiting in a process's queues lose its lease at once (another process
    takes them now, not when the lease runs out); none is dropped."""
    env = {**fast_delivery_env(smtp.port), "LEADSCORE_DELIVERY_PER_DESTINATION": "1"}
    deployment = Deployment.on(stack, **env)
    worker = await start_worker(deployment, tmp_path, "stop")
    slow = Receiver()
    await slow.start()
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(stack[1], tz_aware=True)
    try:
        _, key = await create_project(http, worker.url, deployment.admin_token, "stop")
        api = Api(http, worker.url, key)
        rule = await signup_rule(api, "slow", slow.on("/slow", Behaviour(delay=1.0)))
        await api.send_events(
            [event(f"g{n}", "signup", f"{TODAY}T09:00:00Z", f"g{n}") for n in range(10)]
        )
        await eventually(lambda: _all(api, rule["id"]), lambda found: len(found) == 10)
        worker.stop()  # SIGTERM: one slot, a second per answer: most are still queued
        docs = (
            await client[deployment.prefix]
            .automation_firings.find({"ruleId": rule["id"]})
            .to_list(None)
        )
        assert len(docs) == 10
        pending = [d for d in docs if d["status"] == "pending"]
        assert len(pending) >= 3, "the stop came while firings were queued"
        # only the attempt in flight (one slot) keeps its lease: it may have reached the receiver
        assert len([d for d in pending if d["leaseOwner"] is not None]) <= 1
    finally:
        worker.kill()
        client.close()
        await slow.stop()
