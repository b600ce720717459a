"""The HTTP load generator, run as its own process: `python -m bench.loadgen '<json config>'`.

Modes (all bounded: a fixed number of connections / in-flight requests, a fixed duration):

- `single`: closed loop, `concurrency` connections each POSTing one event at a time to
  `/api/events`; requests/s and latency percentiles of the 202.
- `batch`: closed loop, `concurrency` connections POSTing `/api/events/batch` bodies of
  `batchSize` events; events/s.
- `latency`: open loop at a fixed `rate` of single events (in-flight bounded by `maxInflight`);
  every `probeEvery`-th event goes to a probe lead that has nothing else in flight, and from its
  202 the generator measures when `GET /api/leads/{id}` shows the new eventCount (polled every
  `keyPollMs`) and when MongoDB's `leads` document does (polled every `mongoPollMs`).

Prints one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson

from app.sample_data import EVENT_MIX
from bench.stats import distribution

TYPES = [t for t, _ in EVENT_MIX]
TYPE_WEIGHTS = [w for _, w in EVENT_MIX]


def _event(rng: random.Random, lead: str) -> dict[str, Any]:
    return {
        "eventType": rng.choices(TYPES, weights=TYPE_WEIGHTS)[0],
        "leadId": lead,
        "properties": {"page": f"/p/{rng.randrange(50)}"},
    }


def _zipf_leads(rng: random.Random, prefix: str, n: int, k: int) -> list[str]:
    weights = [1.0 / (i + 1) ** 1.1 for i in range(n)]
    return [f"{prefix}-{i}" for i in rng.choices(range(n), weights=weights, k=k)]


async def closed_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    url = cfg["url"] + ("/api/events/batch" if cfg["mode"] == "batch" else "/api/events")
    headers = {"X-API-Key": cfg["apiKey"], "Content-Type": "application/json"}
    rng = random.Random(cfg.get("seed", 11))
    size = cfg.get("batchSize", 1) if cfg["mode"] == "batch" else 1
    leads = _zipf_leads(rng, cfg.get("leadPrefix", "http"), 5_000, 20_000)
    lead_cycle = itertools.cycle(leads)
    if cfg["mode"] == "batch":
        bodies = [
            orjson.dumps({"events": [_event(rng, next(lead_cycle)) for _ in range(size)]})
            for _ in range(16)
        ]
    else:
        bodies = [orjson.dumps(_event(rng, next(lead_cycle))) for _ in range(4_000)]
    body_cycle = itertools.cycle(bodies)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    stop_at = 0.0

    async def client(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            body = next(body_cycle)
            t = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=cfg["concurrency"])
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # warm-up: open the connections and let the worker's producer settle
        warm_until = time.monotonic() + cfg.get("warmup", 1.0)
        stop_at = warm_until
        await asyncio.gather(*(client(http) for _ in range(cfg["concurrency"])))
        latencies.clear()
        statuses.clear()
        started = time.monotonic()
        stop_at = started + cfg["duration"]
        await asyncio.gather(*(client(http) for _ in range(cfg["concurrency"])))
        seconds = time.monotonic() - started
    ok = statuses.get(202, 0)
    return {
        "generator": "python-aiohttp",
        "mode": cfg["mode"],
        "concurrency": cfg["concurrency"],
        "batchSize": size,
        "seconds": round(seconds, 2),
        "requests": sum(statuses.values()),
        "accepted": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
        "requestsPerSec": round(ok / seconds, 1),
        "eventsPerSec": round(ok * size / seconds, 1),
        "latency": distribution(latencies),
    }


async def latency_run(cfg: dict[str, Any]) -> dict[str, Any]:
    from motor.motor_asyncio import AsyncIOMotorClient

    url = cfg["url"]
    headers = {"X-API-Key": cfg["apiKey"], "Content-Type": "application/json"}
    rng = random.Random(cfg.get("seed", 13))
    rate, duration = cfg["rate"], cfg["duration"]
    probe_every = cfg.get("probeEvery", 10)
    key_poll = cfg.get("keyPollMs", 10) / 1000
    mongo_poll = cfg.get("mongoPollMs", 20) / 1000
    settle = cfg.get("settle", 30.0)
    tag = cfg.get("leadPrefix", "lat")
    background = itertools.cycle(_zipf_leads(rng, f"{tag}-bg", 2_000, 50_000))
    free_probes = [f"{tag}-probe-{i}" for i in range(cfg.get("probeLeads", 4_000))]
    expected: dict[str, int] = {}
    mongo_pending: dict[str, tuple[int, float]] = {}
    busy: dict[str, int] = {}  # probe lead -> outstanding checks (key, mongo)
    ack: list[float] = []
    key_lat: list[float] = []
    mongo_lat: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    late_starts = 0
    inflight = asyncio.Semaphore(cfg.get("maxInflight", 64))
    tasks: set[asyncio.Task[None]] = set()
    done_sending = False

    def release(lead: str) -> None:
        busy[lead] -= 1
        if busy[lead] == 0:
            del busy[lead]
            free_probes.append(lead)

    async def poll_key(http: aiohttp.ClientSession, lead: str, want: int, t_ack: float) -> None:
        deadline = time.monotonic() + settle + duration
        try:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"{url}/api/leads/{lead}", headers=headers) as resp:
                        body = await resp.read()
                        if resp.status == 200 and orjson.loads(body).get("eventCount", 0) >= want:
                            key_lat.append(time.monotonic() - t_ack)
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(key_poll)
        finally:
            release(lead)

    async def send(http: aiohttp.ClientSession, lead: str, probe: bool) -> None:
        try:
            body = orjson.dumps(_event(rng, lead))
            t = time.perf_counter()
            try:
                async with http.post(f"{url}/api/events", data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                    ok = resp.status == 202
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] += 1
                ok = False
            ack.append(time.perf_counter() - t)
            if probe:
                if not ok:
                    expected[lead] -= 1
                    busy[lead] = 1
                    release(lead)
                    return
                t_ack = time.monotonic()
                mongo_pending[lead] = (expected[lead], t_ack)
                spawn(poll_key(http, lead, expected[lead], t_ack))
        finally:
            inflight.release()

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def poll_mongo(db: Any, project_id: str) -> None:
        while not (done_sending and not mongo_pending and not busy):
            if mongo_pending:
                batch = list(mongo_pending)[:500]
                try:
                    docs = await db.leads.find(
                        {"projectId": project_id, "leadId": {"$in": batch}},
                        {"leadId": 1, "eventCount": 1, "_id": 0},
                    ).to_list(None)
                except Exception as exc:
                    errors[f"mongo:{type(exc).__name__}"] += 1
                    docs = []
                now = time.monotonic()
                for doc in docs:
                    lead = doc["leadId"]
                    want, t_ack = mongo_pending.get(lead, (None, 0.0))
                    if want is not None and doc.get("eventCount", 0) >= want:
                        mongo_lat.append(now - t_ack)
                        del mongo_pending[lead]
                        release(lead)
            await asyncio.sleep(mongo_poll)

    mongo: Any = AsyncIOMotorClient(cfg["mongoUrl"], tz_aware=True)
    db = mongo[cfg["mongoDb"]]
    connector = aiohttp.TCPConnector(limit=cfg.get("maxInflight", 64) + 64)
    timeout = aiohttp.ClientTimeout(total=30)
    sent = probes = 0
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            poller = asyncio.get_running_loop().create_task(poll_mongo(db, cfg["projectId"]))
            started = time.monotonic()
            total = int(rate * duration)
            for i in range(total):
                target = started + i / rate
                delay = target - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.05:
                    late_starts += 1
                await inflight.acquire()
                probe = i % probe_every == 0 and bool(free_probes)
                if probe:
                    lead = free_probes.pop(0)
                    expected[lead] = expected.get(lead, 0) + 1
                    busy[lead] = 2
                    probes += 1
                else:
                    lead = next(background)
                spawn(send(http, lead, probe))
                sent += 1
            send_seconds = time.monotonic() - started
            done_sending = True
            deadline = time.monotonic() + settle
            while (busy or tasks) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            unfinished_key = probes - len(key_lat)
            unfinished_mongo = probes - len(mongo_lat)
            poller.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(poller, *tasks, return_exceptions=True)
    finally:
        mongo.close()
    return {
        "generator": "python-aiohttp",
        "mode": "latency",
        "targetRate": rate,
        "achievedRate": round(sent / send_seconds, 1),
        "seconds": round(send_seconds, 2),
        "sent": sent,
        "lateStarts": late_starts,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
        "probes": probes,
        "ack": distribution(ack),
        "visibleByKey": distribution(key_lat),
        "inMongo": distribution(mongo_lat),
        "notVisibleByKey": unfinished_key,
        "notInMongo": unfinished_mongo,
        "settleSeconds": settle,
        "keyPollMs": key_poll * 1000,
        "mongoPollMs": mongo_poll * 1000,
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    runner = latency_run if cfg["mode"] == "latency" else closed_loop
    result = asyncio.run(runner(cfg))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
