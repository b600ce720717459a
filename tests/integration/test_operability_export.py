"""Export of one lead (SPEC 11, issue #15): every event with its properties, merges included.

An anonymous visitor identifies with the e-mail of a known lead and is merged into it; the
export asked for by either key is the canonical lead's, with the events of both keys, their
properties, the aliases and the history rows. It needs the admin right.
"""

from __future__ import annotations

import time
import uuid

from tests.integration.support import Api, create_key, eventually, iso

SECOND = 1_000_000


async def test_export_returns_every_event_of_a_merged_lead(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    owner, anon, email = f"owner-{tag}", f"anon-{tag}", f"{tag}@example.com"
    base = (time.time_ns() // 1000 // SECOND - 3600) * SECOND
    events = [
        {"eventId": f"{tag}-1", "eventType": "signup", "leadId": owner, "timestamp": iso(base)},
        {
            "eventId": f"{tag}-2",
            "eventType": "identify",
            "leadId": owner,
            "timestamp": iso(base + SECOND),
            "properties": {"email": email, "name": "Ada"},
        },
        {
            "eventId": f"{tag}-3",
            "eventType": "page_view",
            "anonymousId": anon,
            "timestamp": iso(base + 2 * SECOND),
            "properties": {"path": "/pricing", "nested": {"a": [1, 2]}},
        },
        {
            "eventId": f"{tag}-4",
            "eventType": "identify",
            "anonymousId": anon,
            "timestamp": iso(base + 3 * SECOND),
            "properties": {"email": email},
        },
    ]
    await api.send_events(events[:2])
    await eventually(
        lambda: api.get(f"/api/leads/{owner}"),
        lambda r: r[0] == 200 and r[1]["email"] == email,
        timeout=90,
    )
    await api.send_events(events[2:])
    await eventually(
        lambda: api.get(f"/api/leads/{anon}"),
        lambda r: r[0] == 200 and r[1]["leadId"] == owner and r[1]["eventCount"] == 4,
        timeout=90,
    )
    status, body = await eventually(
        lambda: api.get(f"/api/leads/{anon}/export"),
        lambda r: r[0] == 200 and len(r[1]["history"]) == 4 and r[1]["lead"] is not None,
        timeout=90,
    )
    assert body["leadId"] == owner and body["requestedKey"] == anon
    assert anon in body["aliases"]
    assert body["traits"]["email"] == email and body["traits"]["name"] == "Ada"
    got = {e["eventId"]: e for e in body["events"]}
    assert list(got) == [e["eventId"] for e in events]  # in scoring order
    for sent in events:
        assert got[sent["eventId"]]["eventType"] == sent["eventType"]
        assert got[sent["eventId"]]["timestamp"] == sent["timestamp"]
        assert got[sent["eventId"]]["properties"] == sent.get("properties"), got
    assert [r["eventId"] for r in body["history"]] == [e["eventId"] for e in events]
    assert body["lead"]["leadId"] == owner and body["lead"]["eventCount"] == 4
    assert body["automationFirings"] == []
    status, again = await api.get(f"/api/leads/{owner}/export")
    assert status == 200 and again["events"] == body["events"]

    _, reader = await create_key(api, "reader", ["read"])
    status, _ = await api.with_key(reader).get(f"/api/leads/{owner}/export")
    assert status == 403
    status, _ = await api.get(f"/api/leads/nobody-{tag}/export")
    assert status == 404
