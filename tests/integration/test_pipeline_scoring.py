"""SPEC 3, 4, 6, 8 end to end: HTTP ingest → events topic → scoring tables → MongoDB, checked
against the pure reference (`core.lead.score_events`), plus rule and settings edits."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.config import ScoringConfig, StageThresholds
from core.timeutil import US_PER_HOUR
from tests.integration.support import (
    Api,
    Reference,
    api_mismatches,
    eventually,
    history_mismatches,
    iso,
    now_us,
    project_id_of,
    safe_past,
    wait_mongo_matches,
)

pytestmark = pytest.mark.integration

S = 1_000_000  # one second in microseconds (MongoDB dates keep milliseconds)
US_PER_MINUTE = 60 * S

# Default-rule types, unknown ones (0 points) and the negative rule, weighted like real traffic.
_TYPES = {
    "page_view": 30,
    "email_open": 12,
    "download": 6,
    "form_submit": 5,
    "signup": 3,
    "pricing_page_visit": 5,
    "webinar_attendance": 3,
    "demo_request": 2,
    "contract_signed": 1,
    "unsubscribe": 8,
    "video_play": 6,  # no rule: 0 points
    "chat.opened": 4,  # no rule: 0 points
}


def _lead_field(lead: str) -> dict[str, str]:
    return {"anonymousId": lead} if lead.startswith("anon-") else {"leadId": lead}


def _random_log(rng: random.Random, now: int) -> list[dict[str, Any]]:
    """~330 events over 30 leads in 60 days, in a shuffled (so partly late) order, with
    duplicates (identical, and with other content: the first occurrence must win), same-time
    ties, and a lead that starts with negative points."""
    leads = [f"lead-{i:02d}" for i in range(24)] + [f"anon-{i:02d}" for i in range(6)]
    types, weights = list(_TYPES), list(_TYPES.values())
    originals: list[dict[str, Any]] = []
    for n in range(280):
        lead = rng.choice(leads)
        event: dict[str, Any] = {
            "eventId": f"ev-{n:04d}",
            "eventType": rng.choices(types, weights)[0],
            "timestamp": iso(safe_past(now, rng.randrange(60), rng)),
            **_lead_field(lead),
        }
        if rng.random() < 0.2:
            event["properties"] = {"path": f"/p/{n}", "n": n}
        originals.append(event)
    # Ties: same lead, same timestamp, different eventIds (ordered by eventId).
    tie_ts = iso(safe_past(now, 3, rng))
    for suffix in ("b", "a", "c"):
        originals.append(
            {
                "eventId": f"tie-{suffix}",
                "eventType": "download",
                "timestamp": tie_ts,
                "leadId": "lead-03",
            }
        )
    # A lead whose first events are negative: the score floors at 0 before climbing.
    for n, event_type in enumerate(("unsubscribe", "unsubscribe", "page_view", "unsubscribe")):
        originals.append(
            {
                "eventId": f"neg-{n}",
                "eventType": event_type,
                "timestamp": iso(safe_past(now, 20 - 3 * n, rng)),
                "leadId": "lead-neg",
            }
        )
    rng.shuffle(originals)
    log = list(originals)
    # Duplicates after their original, both exact and with different content.
    for original in rng.sample(originals, 45):
        dup = dict(original)
        if rng.random() < 0.5:
            dup["eventType"] = "contract_signed"
            dup["timestamp"] = iso(safe_past(now, rng.randrange(60), rng))
        after = log.index(original) + 1
        log.insert(rng.randrange(after, len(log) + 1), dup)
    return log


async def _send_batches(api: Api, log: list[dict[str, Any]], rng: random.Random) -> None:
    start = 0
    while start < len(log):
        batch = log[start : start + rng.randint(15, 90)]
        status, body = await api.post("/api/events/batch", {"events": batch})
        assert status == 202, body
        assert body["eventIds"] == [e["eventId"] for e in batch]
        start += len(batch)


async def test_spec3_4_6_8_batch_ingest_matches_reference(api: Api, mongo_db: Any) -> None:
    seed = 20261122
    rng = random.Random(seed)
    pid = await project_id_of(api)
    log = _random_log(rng, now_us())
    ref = Reference()
    for event in log:
        ref.add_wire(event)

    await _send_batches(api, log, rng)

    await wait_mongo_matches(mongo_db, pid, ref, timeout=90)
    # A single lead read comes from the owning worker's table (decay at read time).
    assert await api_mismatches(api, ref) == [], f"seed {seed}"
    # The timeline API serves the materialized history.
    for lead in ref.leads():
        status, body = await api.get(f"/api/leads/{lead}/timeline")
        assert status == 200, body
        assert body["leadId"] == lead
        assert history_mismatches(body["history"], ref.expected(lead, now_us())) == []
    # Exactly one score_history row per (projectId, leadId, eventId), and no stray rows.
    groups = await mongo_db.score_history.aggregate(
        [
            {"$match": {"projectId": pid}},
            {"$group": {"_id": {"l": "$leadId", "e": "$eventId"}, "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}},
        ]
    ).to_list(None)
    assert groups == []
    distinct = sum(len(events) for events in ref.events.values())
    assert await mongo_db.score_history.count_documents({"projectId": pid}) == distinct
    assert await mongo_db.leads.count_documents({"projectId": pid}) == len(ref.events)


async def _table_count(api: Api, lead: str) -> int:
    status, body = await api.get(f"/api/leads/{lead}")
    return int(body["eventCount"]) if status == 200 else 0


async def _wait_count(api: Api, lead: str, count: int) -> None:
    await eventually(lambda: _table_count(api, lead), lambda n: n >= count, timeout=60)


async def _rules(api: Api) -> dict[str, dict[str, Any]]:
    status, body = await api.get("/api/rules")
    assert status == 200, body
    return {r["eventType"]: r for r in body["rules"]}


async def test_spec3_rule_edits_apply_to_later_events_only(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    ref = Reference()
    lead = "rule-lead"
    t0 = now_us() // 1_000_000 * 1_000_000 - 3 * US_PER_HOUR

    def ev(eid: str, ts: int, event_type: str = "page_view") -> dict[str, Any]:
        return {"eventId": eid, "eventType": event_type, "leadId": lead, "timestamp": iso(ts)}

    assert (await _rules(api))["page_view"]["points"] == 5
    await api.send_events([ev("r1", t0)])
    ref.add(lead, "r1", "page_view", t0, points=5)
    await _wait_count(api, lead, 1)

    status, body = await api.put("/api/rules/page_view", {"points": 7})
    assert status == 200, body
    assert body == {"eventType": "page_view", "points": 7, "active": True}
    assert (await _rules(api))["page_view"] == {
        "eventType": "page_view",
        "points": 7,
        "active": True,
    }
    # A later event, and a late one (older than r1): both scored under the new rule, while r1's
    # row, rewritten by the late insert, keeps its 5 points.
    await api.send_events([ev("r2", t0 + US_PER_MINUTE), ev("r0", t0 - US_PER_HOUR)])
    ref.add(lead, "r2", "page_view", t0 + US_PER_MINUTE, points=7)
    ref.add(lead, "r0", "page_view", t0 - US_PER_HOUR, points=7)
    await _wait_count(api, lead, 3)

    status, body = await api.request("DELETE", "/api/rules/page_view")
    assert status == 200, body
    assert "page_view" not in await _rules(api)
    status, body = await api.put("/api/rules/email_open", {"points": 40, "active": False})
    assert status == 200, body
    assert (await _rules(api))["email_open"]["active"] is False
    await api.send_events(
        [
            ev("r3", t0 + 2 * US_PER_MINUTE),
            ev("r4", t0 + 3 * US_PER_MINUTE, "email_open"),
            ev("r5", t0 + 4 * US_PER_MINUTE, "signup"),
        ]
    )
    ref.add(lead, "r3", "page_view", t0 + 2 * US_PER_MINUTE, points=0)  # no rule
    ref.add(lead, "r4", "email_open", t0 + 3 * US_PER_MINUTE, points=0)  # inactive rule
    ref.add(lead, "r5", "signup", t0 + 4 * US_PER_MINUTE, points=30)

    await wait_mongo_matches(mongo_db, pid, ref)
    assert await api_mismatches(api, ref) == []
    status, body = await api.get(f"/api/leads/{lead}/timeline")
    assert status == 200, body
    assert [r["points"] for r in body["history"]] == [7, 5, 7, 0, 0, 30]
    assert history_mismatches(body["history"], ref.expected(lead, now_us())) == []


async def test_spec3_rule_for_event_type_with_dot(api: Api, mongo_db: Any) -> None:
    """Event types may contain `.` and `:` (SPEC 2 pattern), so rules can name them."""
    pid = await project_id_of(api)
    status, body = await api.put("/api/rules/video.play", {"points": 3})
    assert status == 200, body
    status, body = await api.put("/api/rules/crm:deal_won", {"points": 80})
    assert status == 200, body
    rules = await _rules(api)
    assert rules["video.play"]["points"] == 3
    assert rules["crm:deal_won"]["points"] == 80
    t = now_us() // 1_000_000 * 1_000_000 - US_PER_HOUR
    events = [
        {"eventId": "d1", "eventType": "video.play", "leadId": "dot", "timestamp": iso(t)},
        {"eventId": "d2", "eventType": "crm:deal_won", "leadId": "dot", "timestamp": iso(t + S)},
    ]
    await api.send_events(events)
    ref = Reference()
    ref.add("dot", "d1", "video.play", t, points=3)
    ref.add("dot", "d2", "crm:deal_won", t + S, points=80)
    await wait_mongo_matches(mongo_db, pid, ref)


async def test_spec3_settings_thresholds_set_stage_of_later_leads(api: Api, mongo_db: Any) -> None:
    pid = await project_id_of(api)
    t = now_us() // 1_000_000 * 1_000_000 - 2 * US_PER_HOUR
    ref = Reference()
    await api.send_events(
        [{"eventId": "s1", "eventType": "form_submit", "leadId": "st-1", "timestamp": iso(t)}]
    )
    ref.add("st-1", "s1", "form_submit", t)
    await wait_mongo_matches(mongo_db, pid, ref)
    doc = await mongo_db.leads.find_one({"projectId": pid, "leadId": "st-1"})
    assert doc["leadStage"] == "cold"  # 20 < 30

    new = {
        "graceDays": 7,
        "dailyRate": 0.05,
        "stageThresholds": {"qualified": 50.0, "hot": 30.0, "warm": 10.0},
    }
    status, body = await api.put("/api/settings", new)
    stored = {**new, "allowedOrigins": []}  # SPEC 10's browser origins, none by default
    assert status == 200, body
    assert body == stored
    status, body = await api.get("/api/settings")
    assert (status, body) == (200, stored)
    status, body = await api.put(
        "/api/settings", {"stageThresholds": {"qualified": 10, "hot": 30, "warm": 5}}
    )
    assert status == 422, body

    ref = Reference(ScoringConfig(thresholds=StageThresholds(qualified=50, hot=30, warm=10)))
    ref.add("st-1", "s1", "form_submit", t)
    # The table read is computed now, under the new thresholds: 20 is warm.
    status, body = await api.get("/api/leads/st-1")
    assert (status, body["leadStage"]) == (200, "warm"), body
    later = [
        {"eventId": "s2", "eventType": "page_view", "leadId": "st-1", "timestamp": iso(t + S)},
        {"eventId": "s3", "eventType": "form_submit", "leadId": "st-2", "timestamp": iso(t)},
        {"eventId": "s4", "eventType": "email_open", "leadId": "st-2", "timestamp": iso(t + 9 * S)},
        {"eventId": "s5", "eventType": "demo_request", "leadId": "st-3", "timestamp": iso(t)},
    ]
    await api.send_events(later)
    for event in later:
        ref.add_wire(event)
    await wait_mongo_matches(mongo_db, pid, ref)
    stages = {d["leadId"]: d["leadStage"] async for d in mongo_db.leads.find({"projectId": pid})}
    assert stages == {"st-1": "warm", "st-2": "hot", "st-3": "qualified"}
    assert await api_mismatches(api, ref) == []
