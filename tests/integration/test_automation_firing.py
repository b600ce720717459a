"""SPEC 9 firing, end to end on real parts: a worker (with a pinned "now"), the real broker and
MongoDB-wire server, real HTTP receivers, a real SMTP server.

Each test has its own project on one shared automation worker; expected firing ids are derived
from `core.automation.firing_id`, so "exactly one firing per (project, rule, lead, day)" is
checked against the receiver's distinct `X-Leadscore-Delivery` values, not against our log.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from core.automation import firing_id
from tests.integration.automation_support import (
    TODAY,
    YESTERDAY,
    Receiver,
    SmtpServer,
    create_rule,
    event,
    firings,
    verify_signature,
    wait_firings,
)
from tests.integration.support import (
    Api,
    WorkerProcess,
    consume_all,
    eventually,
    project_id_of,
)

pytestmark = pytest.mark.integration

SECRET = "test-secret-0123456789abcdef"


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "secret": SECRET, **extra}


async def lead_score(api: Api, lead: str) -> float:
    status, body = await api.get(f"/api/leads/{lead}")
    return float(body["currentScore"]) if status == 200 else -1.0


async def test_stage_reached_fires_once_per_lead_per_day_signed(
    auto_api: Api, receiver: Receiver
) -> None:
    url = receiver.url("/stage")
    rule = await create_rule(
        auto_api,
        {
            "name": "Tell sales",
            "trigger": {"kind": "stage_reached", "stage": "qualified"},
            "conditions": {"minVelocity": 2},
            "action": webhook(url),
        },
    )
    pid = await project_id_of(auto_api)
    await auto_api.send_events(
        [
            # a: qualified yesterday (fires, day = yesterday) ...
            event("a", "demo_request", f"{YESTERDAY}T13:00:00Z", "a1"),
            event("a", "demo_request", f"{YESTERDAY}T14:00:00Z", "a2"),
            # b: qualified today, down to hot, qualified again today: one firing
            event("b", "demo_request", f"{TODAY}T08:00:00Z", "b1"),
            event("b", "demo_request", f"{TODAY}T08:30:00Z", "b2"),
            event("b", "unsubscribe", f"{TODAY}T09:00:00Z", "b3"),
            event("b", "unsubscribe", f"{TODAY}T09:30:00Z", "b4"),
            event("b", "contract_signed", f"{TODAY}T10:00:00Z", "b5"),
            # c: qualified with a velocity of 1 only: the condition does not hold
            event("c", "contract_signed", f"{TODAY}T10:00:00Z", "c1"),
        ]
    )
    await eventually(lambda: lead_score(auto_api, "b"), lambda s: s >= 160)
    # ... a: down to hot and qualified again today: a second firing, for today
    await auto_api.send_events(
        [
            event("a", "unsubscribe", f"{TODAY}T09:00:00Z", "a3"),
            event("a", "contract_signed", f"{TODAY}T10:00:00Z", "a4"),
            # duplicates and a late event change nothing that fires
            event("a", "contract_signed", f"{TODAY}T10:00:00Z", "a4"),
            event("b", "demo_request", f"{YESTERDAY}T20:00:00Z", "b-late"),
        ]
    )
    expected = {
        firing_id(pid, rule["id"], "a", YESTERDAY),
        firing_id(pid, rule["id"], "a", TODAY),
        firing_id(pid, rule["id"], "b", TODAY),
    }
    await eventually(
        lambda: _distinct(receiver, "/stage"), lambda d: set(d) >= expected, timeout=60
    )
    await eventually(lambda: lead_score(auto_api, "b"), lambda s: s > 160)  # late one scored
    delivered = await wait_firings(auto_api, rule["id"], 3, status="delivered")
    assert {f["id"] for f in delivered} == expected
    assert set(receiver.distinct("/stage")) == expected  # c never fired; nothing twice
    for req in receiver.at("/stage"):
        assert verify_signature(SECRET, req.headers["X-Leadscore-Signature"], req.body)
        body = req.json
        assert body["type"] == "automation.fired" and body["id"] == req.delivery
        assert body["projectId"] == pid and body["rule"] == {"id": rule["id"], "name": "Tell sales"}
        assert body["lead"]["leadStage"] == "qualified"
        assert set(body["event"]) == {"eventId", "eventType", "timestamp"}


async def _distinct(receiver: Receiver, path: str) -> dict[str, int]:
    return dict(receiver.distinct(path))


async def test_score_crossed_to_slack_and_event_trigger_to_email(
    auto_api: Api, receiver: Receiver, smtp: SmtpServer
) -> None:
    slack = await create_rule(
        auto_api,
        {
            "name": "Hot lead",
            "trigger": {"kind": "score_crossed", "threshold": 60},
            "action": {"type": "slack", "webhookUrl": receiver.url("/slack/T000/B000/XXXX")},
        },
    )
    mail = await create_rule(
        auto_api,
        {
            "name": "Contract",
            "trigger": {"kind": "event", "eventType": "contract_signed"},
            "conditions": {"stages": ["qualified"]},
            "action": {"type": "email", "to": ["sales@example.com"], "subject": "Signed!"},
        },
    )
    quiet = await create_rule(
        auto_api,
        {
            "name": "Never",
            "trigger": {"kind": "event", "eventType": "page_view"},
            "conditions": {"minScore": 50},
            "action": webhook(receiver.url("/never")),
        },
    )
    pid = await project_id_of(auto_api)
    await auto_api.send_events(
        [
            event("m", "page_view", f"{TODAY}T09:00:00Z", "m1"),
            event("m", "contract_signed", f"{TODAY}T09:30:00Z", "m2"),
        ]
    )
    await wait_firings(auto_api, slack["id"], 1, status="delivered")
    await wait_firings(auto_api, mail["id"], 1, status="delivered")
    slack_requests = receiver.at("/slack/T000/B000/XXXX")
    assert len(slack_requests) == 1
    message = slack_requests[0].json
    assert "Hot lead" in message["text"] and isinstance(message["blocks"], list)
    wanted = firing_id(pid, mail["id"], "m", TODAY)
    mails = [m for m in smtp.mailbox.messages if m["X-Leadscore-Delivery"] == wanted]
    assert len(mails) == 1
    assert mails[0]["Subject"] == "Signed!" and mails[0]["To"] == "sales@example.com"
    assert await firings(auto_api, quiet["id"]) == []
    assert receiver.at("/never") == []


async def test_events_older_than_max_trigger_age_are_skipped_not_delivered(
    auto_api: Api, receiver: Receiver
) -> None:
    rule = await create_rule(
        auto_api,
        {
            "name": "Old news",
            "trigger": {"kind": "event", "eventType": "signup"},
            "action": webhook(receiver.url("/old")),
        },
    )
    await auto_api.send_events([event("o", "signup", "2026-11-18T10:00:00Z", "o1")])
    skipped = await wait_firings(auto_api, rule["id"], 1, status="skipped")
    assert skipped[0]["day"] == "2026-11-18" and skipped[0]["attemptCount"] == 0
    assert receiver.at("/old") == []


async def test_a_merge_that_lifts_the_owner_into_qualified_fires_for_the_owner(
    auto_api: Api, receiver: Receiver
) -> None:
    rule = await create_rule(
        auto_api,
        {
            "name": "Merged",
            "trigger": {"kind": "stage_reached", "stage": "qualified"},
            "action": webhook(receiver.url("/merge")),
        },
    )
    pid = await project_id_of(auto_api)
    email = {"email": "owner@example.com"}
    await auto_api.send_events(
        [
            {**event("owner", "identify", f"{TODAY}T08:00:00Z", "o-id"), "properties": email},
            event("owner", "demo_request", f"{TODAY}T08:10:00Z", "o-demo"),
        ]
    )
    await eventually(lambda: lead_score(auto_api, "owner"), lambda s: s == 50)
    await auto_api.send_events(
        [
            {
                "anonymousId": "visitor",
                "eventType": "demo_request",
                "eventId": "v-demo",
                "timestamp": f"{TODAY}T08:20:00Z",
            },
        ]
    )
    await eventually(lambda: lead_score(auto_api, "visitor"), lambda s: s == 50)
    await auto_api.send_events(
        [
            {
                "anonymousId": "visitor",
                "eventType": "identify",
                "eventId": "v-id",
                "timestamp": f"{TODAY}T08:30:00Z",
                "properties": email,
            },
        ]
    )
    fired = await wait_firings(auto_api, rule["id"], 1, status="delivered")
    assert [f["id"] for f in fired] == [firing_id(pid, rule["id"], "owner", TODAY)]
    assert fired[0]["leadId"] == "owner"


async def test_a_record_on_the_firings_topic_that_is_no_candidate_is_dead_lettered(
    auto_api: Api, auto_worker: WorkerProcess, receiver: Receiver
) -> None:
    d = auto_worker.deployment
    rule = await create_rule(
        auto_api,
        {
            "name": "after junk",
            "trigger": {"kind": "event", "eventType": "signup"},
            "action": webhook(receiver.url("/after-junk")),
        },
    )
    producer = AIOKafkaProducer(bootstrap_servers=d.bootstrap_servers)
    await producer.start()
    try:
        topic = f"{d.prefix}.automation-firings"
        for junk in (b"not json", b"[1, 2]", b'{"firingId": {"$gt": ""}}'):
            await producer.send_and_wait(topic, key=b"junk", value=junk)
    finally:
        await producer.stop()
    await auto_api.send_events([event("j", "signup", f"{TODAY}T09:00:00Z", "j1")])
    await wait_firings(auto_api, rule["id"], 1, status="delivered")
    parked = await consume_all(
        d.bootstrap_servers,
        f"{d.prefix}.dead-letter",
        lambda r: b"automation-firings" in r.value,
        lambda found: len(found) >= 3,
    )
    reasons = [json.loads(r.value)["reason"] for r in parked]
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert sum(r.startswith("invalid automation firing candidate") for r in reasons) == 2
