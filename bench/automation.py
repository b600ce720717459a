"""(9) Automation (SPEC 9, issue 12): what rules cost the scoring path, and how fast deliveries go.

- `automationScoring`: the scoring agent alone (sink off) on the same workload, once for a
  project without automation rules and once with 10 active rules (every trigger kind; the ones
  that fire produce real candidates, decided in MongoDB). Target: ratio >= 0.95.
- `automationDecided`: the common path end to end: N events already on the events topic, each
  firing a rule; one worker scores, decides (first attempt without a claim) and delivers them to
  a local aiohttp receiver. Rate = distinct deliveries / (last - first). Target: >= 1,000/s.
- `automationDelivery`: N due firings put straight into `automation_firings` (the path of
  retries and redeliveries: claimed in batches), delivered by one worker.
- `automationLatency`: events sent over HTTP at a fixed rate, each firing an `event` rule; the
  time from the ingest's 202 to the receiver's request, per firing. Target: p99 <= 1 s at 100/s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from app.automations import AutomationModel
from app.mongo import Mongo
from app.projects import ProjectRegistry
from bench.deploy import Deployment, free_port
from bench.kafkautil import produce_all
from bench.stats import distribution, median_run
from bench.workload import build

if TYPE_CHECKING:
    from bench.suite import Suite

__all__ = ["run_automation"]


class _Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, float] = {}  # firing id -> first arrival (monotonic)
        self.leads: dict[str, float] = {}  # lead id -> first arrival
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        body = await request.json()
        self.requests += 1
        self.arrivals.setdefault(request.headers["X-Leadscore-Delivery"], now)
        self.leads.setdefault(body["lead"]["leadId"], now)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _add_rules(d: Deployment, rules: list[dict[str, Any]]) -> list[str]:
    """Store rules in the project record and publish it, as the API does."""
    settings = d.settings()
    producer = AIOKafkaProducer(bootstrap_servers=d.bootstrap, acks="all")
    mongo = Mongo(settings)
    await producer.start()
    ids = [f"aut_bench{n}" for n in range(len(rules))]
    try:

        async def publish(key: bytes, value: bytes) -> None:
            await producer.send_and_wait(settings.topic("projects"), key=key, value=value)

        models = [
            AutomationModel.model_validate({**r, "id": i}).model_dump(mode="json")
            for r, i in zip(rules, ids, strict=True)
        ]
        await ProjectRegistry(mongo, publish).change(
            d.project_id, lambda doc: doc.update(automations=models)
        )
    finally:
        await producer.stop()
        mongo.close()
    return ids


def ten_rules(url: str) -> list[dict[str, Any]]:
    action = {"type": "webhook", "url": url, "secret": "bench-secret-0123456789"}
    triggers: list[dict[str, Any]] = [
        {"kind": "stage_reached", "stage": s} for s in ("warm", "hot", "qualified")
    ]
    triggers += [{"kind": "score_crossed", "threshold": t} for t in (25, 50, 75, 150)]
    triggers += [{"kind": "event", "eventType": t} for t in ("demo_request", "signup", "nope")]
    return [
        {"name": f"rule {n}", "trigger": t, "conditions": {"minScore": 0}, "action": action}
        for n, t in enumerate(triggers)
    ]


async def scoring_with_rules(suite: Suite, receiver: _Receiver) -> dict[str, Any]:
    """Scoring throughput of one worker without rules and with 10 active rules, on one
    workload (4x the `score` workload: the runs are short otherwise), alternating, median of
    `automation_repeats` runs each.

    What is timed is the scoring path, as the issue asks: triggers evaluated and candidates
    produced. So the worker runs with LEADSCORE_DELIVERY=off and nothing decides the candidates
    meanwhile: deciding them is MongoDB work (one insert per candidate, skipped or not) that a
    deployment runs in `leadscore deliver` processes (ADR 0024), while on this 2-core machine it
    would share the cores with the worker. Two more runs with rules show that sharing: one with
    a `leadscore deliver` process deciding at the same time, one with the worker deciding and
    delivering itself (the default)."""
    s = suite.sizes
    now = time.time_ns() // 1000
    url = f"http://127.0.0.1:{receiver.port}/scoring"
    runs: dict[str, list[dict[str, Any]]] = {"withoutRules": [], "with10Rules": []}

    async def one(key: str, n: int, deciding: str) -> dict[str, Any]:
        d = suite.deployment(f"a{key[:5]}{n}{deciding[:2]}")
        await d.create()
        if key != "withoutRules":
            await _add_rules(d, ten_rules(url))
        workload = build(d.project_id, leads=s.leads * 4, events=s.events * 4, now_us=now)
        await produce_all(suite.bootstrap, d.topic("events"), workload.records)
        in_worker = "on" if deciding == "worker" else "off"
        w = d.worker("w1", LEADSCORE_SINK="off", LEADSCORE_DELIVERY=in_worker)
        procs = [w]
        if deciding == "process":
            procs.append(d.worker("deliver", LEADSCORE_ROLE="delivery"))
            procs[-1].start()
        try:
            out = await suite.drain(d, [w], workload, version=1)
        finally:
            for p in procs:
                p.stop()
        if key != "withoutRules":
            out["firingCandidates"] = await suite.probe.total(
                d.topic("automation-firings"), d.partitions
            )
        return out

    for n in range(s.automation_repeats):
        for key in runs:
            runs[key].append(await one(key, n, "none"))
    out: dict[str, Any] = {key: median_run(done) for key, done in runs.items()}
    rate = "eventsPerSec"
    out["with10RulesDecidingInAProcess"] = await one("process", 0, "process")
    out["with10RulesDecidingInTheWorker"] = await one("worker", 0, "worker")
    base = out["withoutRules"].get(rate)
    for key, ratio in (
        ("with10Rules", "ratio"),
        ("with10RulesDecidingInAProcess", "ratioDecidingInAProcess"),
        ("with10RulesDecidingInTheWorker", "ratioDecidingInTheWorker"),
    ):
        got = out[key].get(rate)
        if base and got:
            out[ratio] = round(got / base, 3)
    return out


async def delivery_rate(suite: Suite, receiver: _Receiver, n: int) -> dict[str, Any]:
    d = suite.deployment("ad")
    await d.create()
    [rule_id] = await _add_rules(
        d,
        [
            {
                "name": "deliver",
                "trigger": {"kind": "event", "eventType": "signup"},
                "action": {
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receiver.port}/rate",
                    "secret": "bench-secret-0123456789",
                },
            }
        ],
    )
    mongo = Mongo(d.settings())
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    docs = [
        {
            "_id": f"fir_bench{i:08d}",
            "projectId": d.project_id,
            "ruleId": rule_id,
            "ruleName": "deliver",
            "trigger": {"kind": "event", "eventType": "signup"},
            "leadId": f"rate-{i}",
            "day": now.date().isoformat(),
            "event": {"eventId": f"e{i}", "eventType": "signup", "timestamp": now.isoformat()},
            "lead": {"leadId": f"rate-{i}", "currentScore": 30.0, "leadStage": "warm"},
            "status": "pending",
            "firedAt": now,
            "attemptCount": 0,
            "attempts": [],
            "nextAttemptAt": epoch,
            "leaseUntil": epoch,
            "leaseOwner": None,
        }
        for i in range(n)
    ]
    for start in range(0, n, 1000):
        await mongo.db.automation_firings.insert_many(docs[start : start + 1000])
    mongo.close()
    before = set(receiver.arrivals)
    w = d.worker("w1", LEADSCORE_SINK="off")  # default delivery settings
    w.start()
    deadline = time.monotonic() + 120 + n / 50
    try:
        while time.monotonic() < deadline:
            got = [t for f, t in receiver.arrivals.items() if f not in before]
            if len(got) >= n:
                break
            w.check()
            await asyncio.sleep(0.2)
        got = [t for f, t in receiver.arrivals.items() if f not in before]
    finally:
        w.stop()
    span = max(got) - min(got) if len(got) > 1 else float("nan")
    return {
        "firings": n,
        "delivered": len(got),
        "seconds": round(span, 2),
        "webhooksPerSecond": round(len(got) / span, 1) if span == span and span > 0 else None,
    }


async def decided_rate(
    suite: Suite, receiver: _Receiver, n: int, process: bool = False
) -> dict[str, Any]:
    """The common path end to end: N `signup` events of N new leads already on the events
    topic, each firing a rule; one worker scores them, decides the firings (leased to itself)
    and delivers them — or, with `process`, a `leadscore deliver` process next to a worker run
    with LEADSCORE_DELIVERY=off does. Rate = distinct deliveries / (last - first)."""
    d = suite.deployment("ap" if process else "ae")
    await d.create()
    await _add_rules(
        d,
        [
            {
                "name": "decided",
                "trigger": {"kind": "event", "eventType": "signup"},
                "action": {
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receiver.port}/decided",
                    "secret": "bench-secret-0123456789",
                },
            }
        ],
    )
    now = datetime.now(UTC).isoformat()
    tag = uuid.uuid4().hex[:6]
    records = [
        (
            f"{d.project_id}:dec-{tag}-{i}".encode(),
            orjson.dumps(
                {
                    "projectId": d.project_id,
                    "eventId": f"dec-{tag}-{i}",
                    "eventType": "signup",
                    "leadId": f"dec-{tag}-{i}",
                    "timestamp": now,
                }
            ),
        )
        for i in range(n)
    ]
    await produce_all(suite.bootstrap, d.topic("events"), records)
    wanted = {f"dec-{tag}-{i}" for i in range(n)}
    # default delivery settings
    procs = [d.worker("w1", LEADSCORE_SINK="off", LEADSCORE_DELIVERY="off" if process else "on")]
    if process:
        procs.append(d.worker("deliver", LEADSCORE_ROLE="delivery"))
    for w in procs:
        w.start()
    deadline = time.monotonic() + 120 + n / 50
    try:
        while time.monotonic() < deadline and not wanted <= set(receiver.leads):
            for w in procs:
                w.check()
            await asyncio.sleep(0.2)
    finally:
        for w in procs:
            w.stop()
    got = [receiver.leads[k] for k in wanted if k in receiver.leads]
    span = max(got) - min(got) if len(got) > 1 else 0.0
    return {
        "deliveryProcess": process,
        "firings": n,
        "delivered": len(got),
        "seconds": round(span, 2),
        "webhooksPerSecond": round(len(got) / span, 1) if span > 0 else None,
    }


async def latency(suite: Suite, receiver: _Receiver, rate: int, seconds: float) -> dict[str, Any]:
    d = suite.deployment("al")
    await d.create()
    await _add_rules(
        d,
        [
            {
                "name": "latency",
                "trigger": {"kind": "event", "eventType": "signup"},
                "action": {
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receiver.port}/latency",
                    "secret": "bench-secret-0123456789",
                },
            }
        ],
    )
    # the default delivery settings: the target must hold with what a user gets
    w = d.worker("w1", LEADSCORE_SINK="off")
    w.start()
    await w.wait_healthy()
    accepted: dict[str, float] = {}
    tag = uuid.uuid4().hex[:6]
    try:
        async with aiohttp.ClientSession() as http:

            async def one(i: int) -> None:
                lead = f"lat-{tag}-{i}"
                body = {"leadId": lead, "eventType": "signup"}
                async with http.post(
                    f"{w.url}/api/events", json=body, headers={"X-API-Key": d.api_key}
                ) as resp:
                    if resp.status == 202:
                        accepted[lead] = time.monotonic()

            tasks = []
            t0 = time.monotonic()
            total = int(rate * seconds)
            for i in range(total):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(accepted) <= set(receiver.leads):
            await asyncio.sleep(0.2)
    finally:
        w.stop()
    lat = [receiver.leads[k] - t for k, t in accepted.items() if k in receiver.leads]
    return {
        "ratePerSecond": rate,
        "seconds": seconds,
        "accepted": len(accepted),
        "delivered": len(lat),
        **distribution(lat),
    }


async def run_automation(suite: Suite) -> None:
    receiver = _Receiver()
    await receiver.start()
    try:
        quick = suite.sizes.name == "quick"
        await suite._phase(
            "automationScoring",
            lambda: _into(suite, "automationScoring", scoring_with_rules(suite, receiver)),
        )
        await suite._phase(
            "automationDelivery",
            lambda: _into(
                suite,
                "automationDelivery",
                delivery_rate(suite, receiver, 2_000 if quick else 10_000),
            ),
        )
        await suite._phase(
            "automationDecided",
            lambda: _into(
                suite,
                "automationDecided",
                decided_rate(suite, receiver, 2_000 if quick else 10_000),
            ),
        )
        await suite._phase(
            "automationDecidedProcess",
            lambda: _into(
                suite,
                "automationDecidedProcess",
                decided_rate(suite, receiver, 2_000 if quick else 10_000, process=True),
            ),
        )
        await suite._phase(
            "automationLatency",
            lambda: _into(
                suite, "automationLatency", latency(suite, receiver, 100, 10 if quick else 30)
            ),
        )
    finally:
        await receiver.stop()


async def _into(suite: Suite, key: str, measured: Any) -> None:
    suite.results[key] = await measured
    print(f"[bench] {key}: {suite.results[key]}", flush=True)
