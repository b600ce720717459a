"""SPEC 1, 2 and 8 through HTTP: tenant isolation, validation of what comes in, and the reads
(lists, leaderboard, stage counts, intelligence) of what went through the pipeline."""

from __future__ import annotations

import math
import uuid
from typing import Any

import aiohttp
import pytest

from core.timeutil import US_PER_DAY, US_PER_HOUR
from tests.integration.support import (
    Api,
    Deployment,
    Reference,
    WorkerProcess,
    api_mismatches,
    create_project,
    eventually,
    history_mismatches,
    iso,
    now_us,
    project_id_of,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration

US_PER_SECOND = 1_000_000


def _now_s() -> int:
    """Now, truncated to whole seconds (MongoDB dates keep milliseconds)."""
    return now_us() // US_PER_SECOND * US_PER_SECOND


async def _table_count(api: Api, lead: str) -> int:
    status, body = await api.get(f"/api/leads/{lead}")
    return int(body["eventCount"]) if status == 200 else 0


# -- SPEC 1: tenant isolation ------------------------------------------------------------------


async def test_spec1_project_cannot_see_or_write_another_projects_leads(
    api: Api,
    http: aiohttp.ClientSession,
    worker: WorkerProcess,
    deployment: Deployment,
    mongo_db: Any,
) -> None:
    pid_a = await project_id_of(api)
    pid_b, key_b = await create_project(http, worker.url, deployment.admin_token, "tenant-b")
    api_b = api.with_key(key_b)
    t = _now_s() - 2 * US_PER_HOUR
    b_event = {"eventId": "b1", "eventType": "signup", "leadId": "b-lead", "timestamp": iso(t)}
    await api_b.send_events([b_event])
    # A's key, B's projectId in the body: the key decides, the event lands in A.
    spoof = {
        "eventId": "a1",
        "eventType": "demo_request",
        "leadId": "shared-name",
        "timestamp": iso(t),
        "projectId": pid_b,
    }
    await api.send_events([spoof])
    ref_a, ref_b = Reference(), Reference()
    ref_a.add_wire(spoof)
    ref_b.add_wire(b_event)
    await wait_mongo_matches(mongo_db, pid_a, ref_a)
    await wait_mongo_matches(mongo_db, pid_b, ref_b)

    for path in (
        "/api/leads/b-lead",
        "/api/leads/b-lead/timeline",
        "/api/leads/b-lead/intelligence",
    ):
        status, body = await api.get(path)
        assert status == 404, (path, body)
    status, body = await api_b.get("/api/leads/shared-name")
    assert status == 404, body
    assert await mongo_db.leads.count_documents({"projectId": pid_b, "leadId": "shared-name"}) == 0
    for path in ("/api/leads", "/api/leaderboard"):
        status, body = await api.get(path)
        assert status == 200, body
        assert [lead["leadId"] for lead in body["leads"]] == ["shared-name"]
        assert body["total"] == 1
        assert all(lead.get("projectId", pid_a) == pid_a for lead in body["leads"])
    status, body = await api.get("/api/leaderboard/by-stage")
    assert body["total"] == 1 and body["projectId"] == pid_a
    assert await api_mismatches(api, ref_a) == []
    assert await api_mismatches(api_b, ref_b) == []
    # A's rule edits do not touch B.
    status, _ = await api.put("/api/rules/signup", {"points": 1})
    assert status == 200
    status, body = await api_b.get("/api/rules")
    assert {r["eventType"]: r["points"] for r in body["rules"]}["signup"] == 30


# -- SPEC 2: validation ------------------------------------------------------------------------


async def test_spec2_requests_without_a_valid_key_are_401(api: Api) -> None:
    event = {"eventType": "page_view", "leadId": "k"}
    for key in ("", "lsk_not-a-real-key"):
        anon = api.with_key(key)
        for method, path, body in (
            ("POST", "/api/events", event),
            ("POST", "/api/events/batch", {"events": [event]}),
            ("GET", "/api/leads", None),
            ("GET", "/api/leads/k", None),
            ("GET", "/api/rules", None),
        ):
            status, reply = await anon.request(method, path, body)
            assert status == 401, (key, path, reply)
            assert reply["error"]
    status, reply = await api.with_key("").post(
        "/api/ingest/event", {"apiKey": "lsk_nope", "event": "page_view", "anonymousId": "a"}
    )
    assert status == 401, reply


def _fields(reply: dict[str, Any]) -> set[str]:
    return {f["field"] for f in reply.get("fields", [])}


async def test_spec2_invalid_event_is_422_naming_each_field(api: Api) -> None:
    now = now_us()
    good = {"eventType": "page_view", "leadId": "v-lead"}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({**good, "eventType": "bad type!"}, {"eventType"}),
        ({**good, "eventType": "x" * 65}, {"eventType"}),
        ({"eventType": "page_view"}, {"leadId"}),
        ({**good, "timestamp": iso(now + 10 * 60 * US_PER_SECOND)}, {"timestamp"}),
        ({**good, "timestamp": "2026-01-01T00:00:00"}, {"timestamp"}),  # no offset
        ({**good, "properties": {"blob": "x" * (16 * 1024)}}, {"properties"}),
        ({**good, "eventId": "e" * 129}, {"eventId"}),
        ({**good, "eventId": ""}, {"eventId"}),
        ({**good, "leadId": "l" * 129}, {"leadId"}),
        (
            {
                "eventType": "no spaces",
                "eventId": "e" * 129,
                "timestamp": iso(now + 3_600 * US_PER_SECOND),
            },
            {"eventType", "eventId", "leadId"},
        ),
    ]
    for event, fields in cases:
        status, reply = await api.post("/api/events", event)
        assert status in (400, 422), (event, reply)
        assert fields <= _fields(reply), (event, reply)
    # A timestamp just inside the 5-minute allowance is fine.
    status, reply = await api.post(
        "/api/events", {**good, "timestamp": iso(now + 4 * 60 * US_PER_SECOND)}
    )
    assert status == 202, reply
    await eventually(lambda: _table_count(api, "v-lead"), lambda n: n == 1)


async def test_spec2_batch_with_an_invalid_event_is_rejected_whole(api: Api) -> None:
    t = _now_s() - US_PER_HOUR
    batch = [
        {"eventId": f"w{i}", "eventType": "page_view", "leadId": "whole", "timestamp": iso(t + i)}
        for i in range(6)
    ]
    batch[2] = {**batch[2], "eventType": "bad type"}
    batch[4] = {"eventId": "w4", "eventType": "page_view", "timestamp": iso(t)}  # no lead key
    status, reply = await api.post("/api/events/batch", {"events": batch})
    assert status in (400, 422), reply
    invalid = {item["index"]: {f["field"] for f in item["fields"]} for item in reply["invalid"]}
    assert invalid == {2: {"eventType"}, 4: {"leadId"}}
    # Nothing of it was produced: a later event of the same lead (same partition, so scored
    # after anything of the batch) is the lead's only one.
    sentinel = {
        "eventId": "w-sentinel",
        "eventType": "signup",
        "leadId": "whole",
        "timestamp": iso(t + 100 * US_PER_SECOND),
    }
    await api.send_events([sentinel])
    await eventually(lambda: _table_count(api, "whole"), lambda n: n >= 1)
    status, body = await api.get("/api/leads/whole")
    assert body["eventCount"] == 1, body


async def test_spec2_batch_over_1000_events_or_body_over_1mib_is_413(api: Api) -> None:
    event = {"eventType": "page_view", "leadId": "big"}
    status, reply = await api.post("/api/events/batch", {"events": [event] * 1001})
    assert status == 413, reply
    # Exactly 1000 is fine.
    t = _now_s() - 2 * US_PER_HOUR
    full = [
        {
            "eventType": "page_view",
            "leadId": f"big-{i % 50}",
            "timestamp": iso(t + i * US_PER_SECOND),
        }
        for i in range(1000)
    ]
    status, reply = await api.post("/api/events/batch", {"events": full})
    assert status == 202, reply
    assert len(set(reply["eventIds"])) == 1000
    big = {**event, "properties": {"blob": "x" * 15_000}}
    # ~1.2 MiB, and ~12 MiB (over any sane server read limit), each event valid on its own
    for count in (80, 800):
        status, reply = await api.post("/api/events/batch", {"events": [big] * count})
        assert status == 413, (count, reply)
    status, reply = await api.post("/api/events", {**event, "properties": {"b": "x" * 70_000}})
    assert status in (413, 422), reply


async def test_spec2_sdk_route_and_generated_event_ids(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    t = _now_s() - US_PER_HOUR
    sdk = api.with_key("")  # the SDK sends its key in the body, no header
    status, reply = await sdk.post(
        "/api/ingest/event",
        {
            "apiKey": api.api_key,
            "event": "pricing_page_visit",
            "anonymousId": "anon-sdk",
            "timestamp": iso(t),
            "properties": {"url": "/pricing"},
        },
    )
    assert status == 202, reply
    sdk_id = reply["eventId"]
    assert uuid.UUID(sdk_id)
    status, reply = await api.post(
        "/api/events",
        {"eventType": "signup", "anonymousId": "anon-sdk", "timestamp": iso(t + US_PER_SECOND)},
    )
    assert status == 202, reply
    single_id = reply["eventId"]
    assert uuid.UUID(single_id)
    status, reply = await api.post(
        "/api/events/batch",
        {
            "events": [
                {
                    "eventType": "page_view",
                    "anonymousId": "anon-sdk",
                    "timestamp": iso(t + (2 + i) * US_PER_SECOND),
                }
                for i in range(3)
            ]
        },
    )
    assert status == 202, reply
    batch_ids = reply["eventIds"]
    assert len(set(batch_ids)) == 3 and all(uuid.UUID(i) for i in batch_ids)
    status, reply = await sdk.post(
        "/api/ingest/event", {"apiKey": api.api_key, "event": "bad type", "anonymousId": "x"}
    )
    assert status == 422 and "eventType" in _fields(reply), reply

    ref = Reference()
    ref.add("anon-sdk", sdk_id, "pricing_page_visit", t)
    ref.add("anon-sdk", single_id, "signup", t + US_PER_SECOND)
    for i, event_id in enumerate(batch_ids):
        ref.add("anon-sdk", event_id, "page_view", t + (2 + i) * US_PER_SECOND)
    await wait_mongo_matches(mongo_db, pid, ref)
    status, body = await api.get("/api/leads/anon-sdk/timeline")
    assert status == 200, body
    assert history_mismatches(body["history"], ref.expected("anon-sdk", now_us())) == []
    assert body["history"][0]["properties"] == {"url": "/pricing"}


async def test_spec4_timestamps_keep_their_microseconds(api: Api, mongo_db: Any) -> None:
    """A timestamp is given to the microsecond; every read shows the same instant."""
    pid = await project_id_of(api)
    t = _now_s() - US_PER_HOUR + 123_456
    await api.send_events(
        [{"eventId": "us1", "eventType": "page_view", "leadId": "micro", "timestamp": iso(t)}]
    )
    await eventually(
        lambda: mongo_db.score_history.count_documents({"projectId": pid, "leadId": "micro"}),
        lambda n: n == 1,
    )
    await eventually(lambda: _table_count(api, "micro"), lambda n: n == 1)
    status, lead = await api.get("/api/leads/micro")
    assert lead["lastEventAt"] == iso(t)
    status, listed = await api.get("/api/leads")
    assert listed["leads"][0]["lastEventAt"] == iso(t), listed
    status, body = await api.get("/api/leads/micro/timeline")
    assert status == 200, body
    assert body["history"][0]["timestamp"] == iso(t), body


# -- SPEC 8: reads -----------------------------------------------------------------------------


async def test_spec8_lead_lists_leaderboard_and_stage_counts(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    t = _now_s() - 3 * US_PER_HOUR
    plan = {  # lead: event types (scores: 5, 35, 65, 120, 30, 0, 15)
        "l-cold": ["page_view"],
        "l-warm": ["page_view", "signup"],
        "l-hot": ["page_view", "signup", "signup"],
        "l-qual": ["contract_signed", "form_submit"],
        "l-warm2": ["signup"],
        "l-zero": ["unsubscribe"],
        "l-cold2": ["download"],
    }
    events = []
    for n, (lead, types) in enumerate(plan.items()):
        for i, event_type in enumerate(types):
            ts = t + n * 60 * US_PER_SECOND + i * US_PER_SECOND
            events.append(
                {
                    "eventId": f"{lead}-{i}",
                    "eventType": event_type,
                    "leadId": lead,
                    "timestamp": iso(ts),
                }
            )
    await api.send_events(events)
    ref = Reference()
    for event in events:
        ref.add_wire(event)
    await wait_mongo_matches(mongo_db, pid, ref)
    scores = {lead: ref.expected(lead, now_us()).current_score for lead in plan}
    assert scores == {
        "l-cold": 5,
        "l-warm": 35,
        "l-hot": 65,
        "l-qual": 120,
        "l-warm2": 30,
        "l-zero": 0,
        "l-cold2": 15,
    }
    by_score = sorted(plan, key=lambda lead: (-scores[lead], lead))
    by_activity = list(reversed(plan))  # each lead's events are later than the previous lead's

    async def ids(path: str) -> tuple[int, list[str], dict[str, Any]]:
        status, body = await api.get(path)
        assert status == 200, (path, body)
        return body["total"], [lead["leadId"] for lead in body["leads"]], body

    assert (await ids("/api/leads"))[:2] == (7, by_score)
    assert (await ids("/api/leads?sort=score"))[:2] == (7, by_score)
    assert (await ids("/api/leads?sort=lastActivity"))[:2] == (7, by_activity)
    assert (await ids("/api/leads?stage=warm"))[:2] == (2, ["l-warm", "l-warm2"])
    assert (await ids("/api/leads?stage=cold"))[:2] == (3, ["l-cold2", "l-cold", "l-zero"])
    assert (await ids("/api/leads?minScore=60"))[:2] == (2, ["l-qual", "l-hot"])
    assert (await ids("/api/leads?minScore=30&stage=warm&limit=1"))[:2] == (2, ["l-warm"])
    total, page, body = await ids("/api/leads?limit=3&offset=2")
    assert (total, page, body["limit"], body["offset"]) == (7, by_score[2:5], 3, 2)
    lead_doc = body["leads"][0]
    assert lead_doc["currentScore"] == scores[page[0]]
    assert lead_doc["eventCount"] == len(plan[page[0]])
    for bad in ("stage=lukewarm", "sort=name", "limit=0", "limit=x", "minScore=abc"):
        status, reply = await api.get(f"/api/leads?{bad}")
        assert status in (400, 422), (bad, reply)
        assert reply.get("fields"), reply

    total, page, body = await ids("/api/leaderboard")
    assert (total, page) == (7, by_score)
    assert [lead["rank"] for lead in body["leads"]] == list(range(1, 8))
    total, page, body = await ids("/api/leaderboard?limit=2&offset=3")
    assert page == by_score[3:5]
    assert [lead["rank"] for lead in body["leads"]] == [4, 5]

    status, body = await api.get("/api/leaderboard/by-stage")
    assert status == 200, body
    assert body["stages"] == {"qualified": 1, "hot": 1, "warm": 2, "cold": 3}
    assert body["total"] == 7


async def test_spec8_intelligence_risk_trend_churn_next_action(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    now = _now_s()
    events = [
        # active: 1 event 25-47 h ago, 3 in the last 24 h -> low risk, accelerating, hot (65)
        ("active", "signup", now - 30 * US_PER_HOUR),
        ("active", "signup", now - 3 * US_PER_HOUR),
        ("active", "page_view", now - 2 * US_PER_HOUR),
        ("active", "page_view", now - 1 * US_PER_HOUR),
        # fading: 2 events the day before yesterday-ish, none today -> decelerating
        ("fading", "page_view", now - 40 * US_PER_HOUR),
        ("fading", "form_submit", now - 30 * US_PER_HOUR),
        # stale: last event 10 days ago -> high risk, re-engage
        ("stale", "demo_request", now - 10 * US_PER_DAY - 2 * US_PER_HOUR),
        # busy: 12 events in the last 24 h -> velocityScore capped at 10
        *(("busy", "page_view", now - (12 - i) * US_PER_HOUR) for i in range(12)),
    ]
    wire = [
        {"eventId": f"i{n}", "eventType": et, "leadId": lead, "timestamp": iso(ts)}
        for n, (lead, et, ts) in enumerate(events)
    ]
    await api.send_events(wire)
    ref = Reference()
    for event in wire:
        ref.add_wire(event)
    await wait_mongo_matches(mongo_db, pid, ref)

    async def intel(lead: str) -> dict[str, Any]:
        status, body = await api.get(f"/api/leads/{lead}/intelligence")
        assert status == 200, body
        assert body["leadId"] == lead
        exp = ref.expected(lead, now_us())
        assert body["leadStage"] == exp.stage
        assert abs(body["currentScore"] - exp.current_score) <= 0.01
        days = (now_us() - exp.last) / US_PER_DAY
        assert abs(body["daysSinceLastEvent"] - days) <= 0.01
        churn = 1 / (1 + math.exp(-(days - 14) / 3))
        assert abs(body["churnProbability"] - churn) <= 1e-3
        return body

    active = await intel("active")
    assert active["risk"] == "low"
    assert active["velocity"] == {
        "eventsLast24h": 3,
        "eventsPrevious24h": 1,
        "trend": "accelerating",
    }
    assert active["leadStage"] == "hot"
    assert active["nextBestAction"] == "offer a demo or a trial extension"
    fading = await intel("fading")
    assert fading["velocity"] == {
        "eventsLast24h": 0,
        "eventsPrevious24h": 2,
        "trend": "decelerating",
    }
    assert fading["risk"] == "low"
    stale = await intel("stale")
    assert stale["risk"] == "high"
    assert stale["nextBestAction"] == "re-engage: send a win-back email"
    assert stale["velocity"]["trend"] == "steady"
    busy = await intel("busy")
    assert busy["velocity"]["eventsLast24h"] == 12
    status, body = await api.get("/api/leads/busy")
    assert (status, body["eventsLast24h"], body["velocityScore"]) == (200, 12, 10), body
    status, body = await api.get("/api/leads/nobody/intelligence")
    assert status == 404, body
