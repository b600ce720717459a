"""A property-based fuzz of every route of a real worker (issue 10): hostile JSON bodies, header
bytes that are not UTF-8, odd paths, query strings and methods, some with a valid project key.

The routes are read from the worker's own router (the same code and settings the worker runs),
so a new route is fuzzed without editing this file. Afterwards: no request got a 5xx or hung,
the worker is alive, a victim project's lead (whose key the fuzz never holds) is still exact in
the table and in MongoDB, and the sink still materializes a fresh event.

Size: LEADSCORE_FUZZ_REQUESTS (default 400) requests, three quarters one at a time and the rest
in bursts of 8 concurrent ones (races); LEADSCORE_FUZZ_SEED to replay a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    RawReply,
    Reference,
    WorkerProcess,
    api_mismatches,
    create_project,
    eventually,
    iso,
    now_us,
    raw_http,
    safe_past,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration

FUZZ_REQUESTS = int(os.environ.get("LEADSCORE_FUZZ_REQUESTS", "400"))
FUZZ_SEED = int(os.environ.get("LEADSCORE_FUZZ_SEED", str(random.randrange(2**32))))
REQUEST_TIMEOUT = 30.0  # a request slower than this is a hang
BURST = 8

_LIST_ROUTES = """
import json, app.worker
from app.topology import app
routes = []
for route in app.web.web_app.router.routes():
    info = route.resource.get_info() if route.resource is not None else {}
    routes.append([route.method, info.get("path") or info.get("formatter")])
print(json.dumps(routes))
"""


def worker_routes(deployment: Deployment) -> list[tuple[str, str]]:
    """(method, path template) of every route the worker's web app registers."""
    out = subprocess.run(
        [sys.executable, "-c", _LIST_ROUTES],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    routes = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return [(method, path) for method, path in routes if path]


# -- strategies ------------------------------------------------------------------------------

hostile_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec=None), max_size=12),  # lone surrogates included
    st.sampled_from(["", "\x00", "$where", "a.b", "..", "/", "%", "é" * 200, "x" * 300]),
)
hostile_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**64 - 1, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalar = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=16,
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1969-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "3000-01-01T00:00:00Z",
        ]
    ),
    st.builds(lambda days: iso(now_us() - days * 86_400_000_000), st.integers(0, 20_000)),
    hostile_text,
    hostile_number,
)
event_body = st.fixed_dictionaries(
    {},
    optional={
        "eventId": hostile_text,
        "eventType": st.sampled_from(["page_view", "identify", "signup", "x y", ""]) | scalar,
        "event": hostile_text,
        "leadId": st.sampled_from(["fz-1", "fz-2"]) | hostile_text | scalar,
        "anonymousId": hostile_text,
        "timestamp": timestamps,
        "properties": json_value,
        "projectId": hostile_text,
        "apiKey": hostile_text,
    },
)
# a valid event with one field made hostile: reaches every check behind the first one
VALID_EVENT = {"eventType": "page_view", "leadId": "fz-1", "properties": {"plan": "pro"}}
near_valid_event = st.builds(
    lambda name, value, nested: {
        **VALID_EVENT,
        **({"properties": {"plan": {"deep": value}}} if nested else {name: value}),
    },
    st.sampled_from(sorted({*VALID_EVENT, "eventId", "timestamp", "anonymousId"})),
    json_value | timestamps,
    st.booleans(),
)
structured_body = st.one_of(
    event_body,
    near_valid_event,
    near_valid_event,
    st.builds(lambda events: {"events": events}, st.lists(event_body, max_size=4)),
    st.builds(
        lambda events: {"events": [VALID_EVENT, *events]}, st.lists(near_valid_event, max_size=3)
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "graceDays": hostile_number | hostile_text,
            "dailyRate": hostile_number | hostile_text,
            "stageThresholds": st.dictionaries(
                st.sampled_from(["qualified", "hot", "warm", "x"]), scalar
            ),
        },
    ),
    st.fixed_dictionaries({}, optional={"points": scalar, "active": scalar, "name": scalar}),
    json_value,
)


def _encode(value: Any) -> bytes:
    # the stdlib writes what orjson would refuse to: big ints, Infinity/NaN, \\udXXX escapes
    return json.dumps(value, ensure_ascii=True).encode()


def _deep(depth: int) -> bytes:
    return (
        b'{"eventType":"x","leadId":"d","properties":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * (depth + 1)
    )


structured = st.builds(_encode, structured_body)
bodies = st.one_of(
    structured,  # listed thrice: most bodies parse, so they reach validation
    structured,
    structured,
    st.builds(_deep, st.integers(1, 3000)),
    st.binary(max_size=64),  # not JSON, not UTF-8
    st.builds(lambda b: b[: len(b) // 2], structured),  # truncated
    st.just(b""),
)
header_bytes = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip()
)


def _path_segment(text: str) -> bytes:
    return quote(text, safe="", errors="surrogatepass").encode()


path_segment = st.one_of(
    st.builds(_path_segment, hostile_text),
    st.sampled_from([b"fz-1", b"%FF%FE", b"%00", b"..", b"%2F", b"x" * 500, b"%C3%28"]),
)
query_names = st.sampled_from(
    ["limit", "offset", "minScore", "stage", "sort", "requestedKey", "status", "x"]
)
query_value = st.one_of(
    st.builds(lambda t: quote(t, safe="", errors="surrogatepass").encode(), hostile_text),
    st.sampled_from([b"-1", b"0", b"1", b"10000", b"1e309", b"nan", b"%FF", b"9" * 40]),
)
queries = st.lists(st.tuples(query_names, query_value), max_size=4).map(
    lambda pairs: b"&".join(name.encode() + b"=" + value for name, value in pairs)
)


def fill(template: str, segments: list[bytes]) -> bytes:
    """A path from its template, each `{param}` replaced by a hostile segment."""
    out, rest = b"", template
    for segment in segments:
        head, sep, tail = rest.partition("{")
        if not sep:
            break
        out += head.encode() + segment
        rest = tail.partition("}")[2]
    return out + rest.encode()


# -- the test --------------------------------------------------------------------------------


async def test_no_request_to_any_route_gets_a_5xx_or_hangs_or_hurts_another_tenant(
    worker: WorkerProcess, deployment: Deployment, http: aiohttp.ClientSession, mongo_db: Any
) -> None:
    routes = worker_routes(deployment)
    assert ("POST", "/api/events") in routes and len(routes) > 20, routes

    # the victim: a project whose key the fuzz never sees, with a known lead
    victim_pid, victim_key = await create_project(http, worker.url, deployment.admin_token, "v")
    victim = Api(http, worker.url, victim_key)
    now, rng, ref = now_us(), random.Random(FUZZ_SEED), Reference()
    known = [
        {
            "eventId": f"v-{i}",
            "eventType": ["page_view", "signup", "demo_request"][i % 3],
            "leadId": "victim-lead",
            "timestamp": iso(safe_past(now, i % 10, rng)),
            "properties": {"i": i},
        }
        for i in range(12)
    ]
    for event in known:
        ref.add_wire(event)
    await victim.send_events(known)
    await wait_mongo_matches(mongo_db, victim_pid, ref)

    _, attacker_key = await create_project(http, worker.url, deployment.admin_token, "attacker")
    keys = st.one_of(
        st.just(attacker_key.encode()),  # a valid key, in some of the requests
        header_bytes,
        st.just(b"lsk_" + b"\xff" * 8),
    )
    admin = st.one_of(
        st.just(f"Bearer {deployment.admin_token}".encode()),
        st.builds(lambda b: b"Bearer " + b, header_bytes),
    )
    with_body = [(m, path) for m, path in routes if m in ("POST", "PUT")]
    request = st.tuples(
        st.one_of(
            st.sampled_from(routes),  # listed twice: mostly the routes as registered
            st.sampled_from(routes),
            st.sampled_from(with_body),  # and those that read a body, more often
            st.tuples(
                st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
                st.sampled_from([path for _, path in routes] + ["/api/nope/{x}", "/{x}"]),
            ),
        ),
        st.lists(path_segment, min_size=2, max_size=2),
        queries,
        st.dictionaries(
            st.sampled_from(
                [b"X-API-Key", b"Authorization", b"Idempotency-Key", b"Content-Type", b"Accept"]
            ),
            header_bytes,
            max_size=3,
        ),
        keys,
        admin,
        bodies,
        st.sampled_from([True, True, True, False]),  # mostly with the attacker's valid key
    )
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    async def one(drawn: Any) -> None:
        (method, template), segments, query, headers, key, token, body, keyed = drawn
        target = fill(template, segments) + (b"?" + query if query else b"")
        sent = dict(headers)
        if keyed:
            sent[b"X-API-Key"] = key
            sent.setdefault(b"Authorization", token)
        try:
            reply: RawReply = await raw_http(
                worker.url,
                method.encode(),
                target,
                list(sent.items()),
                body if method not in ("GET", "HEAD") else b"",
                timeout=REQUEST_TIMEOUT,
            )
        except TimeoutError:
            failures.append(f"hang: {method} {target!r}")
            raise AssertionError(failures[-1]) from None
        statuses[reply.status] += 1
        if reply.status >= 500:
            failures.append(f"{reply.status}: {method} {target!r} {sent!r} {body[:200]!r}")
            raise AssertionError(failures[-1] + f" -> {reply.body[:300]!r}")

    async def together(drawn: list[Any]) -> None:
        await asyncio.gather(*(one(d) for d in drawn))

    def run(strategy: Any, examples: int, send: Callable[[Any], Any]) -> None:
        seed(FUZZ_SEED)(
            settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(lambda drawn: asyncio.run(send(drawn))))
        )()

    # one request at a time, then bursts of 8 at once (races: admin slots, project changes)
    await asyncio.to_thread(run, request, FUZZ_REQUESTS * 3 // 4, one)
    burst = st.lists(request, min_size=BURST, max_size=BURST)
    await asyncio.to_thread(run, burst, max(1, FUZZ_REQUESTS // 4 // BURST), together)
    assert not failures, failures
    print(f"fuzz seed {FUZZ_SEED}: statuses {sorted(statuses.items())}")
    # the fuzz went past authentication, and the handlers behind it still answer as they
    # should (a 2xx or 422 among 400 random requests depends on the seed: asked for here)
    assert statuses[401] > 0 and sum(n for s, n in statuses.items() if s != 401) > 0, statuses
    attacker = Api(http, worker.url, attacker_key)
    await attacker.send_events([{**VALID_EVENT, "eventId": "after-fuzz", "leadId": "after-fuzz"}])
    status, body = await attacker.post("/api/events", {**VALID_EVENT, "eventType": "bad type"})
    assert status in (400, 422) and "eventType" in str(body), (status, body)

    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    status, _ = await victim.get("/api/health")
    assert status == 200
    # the victim is exact, in its owner's table and in MongoDB, and the sink still writes
    assert await api_mismatches(victim, ref) == []
    fresh = {
        "eventId": "v-fresh",
        "eventType": "email_open",
        "leadId": "victim-lead",
        "timestamp": iso((now_us() // 1_000_000 - 1) * 1_000_000),  # MongoDB keeps ms
    }
    ref.add_wire(fresh)
    await victim.send_events([fresh])
    await wait_mongo_matches(mongo_db, victim_pid, ref)
    await eventually(lambda: api_mismatches(victim, ref), lambda diffs: not diffs)
