"""The paths of the system leadscore replaces keep working (documented as aliases)."""

from __future__ import annotations

import pytest

from tests.integration.support import Api

pytestmark = pytest.mark.integration


async def test_generate_api_key_gives_a_secret_key_with_every_scope(api: Api) -> None:
    for route in ("/api/auth/generate-api-key", "/api/projects/current/keys"):
        status, body = await api.post(route)
        assert status == 201, (route, body)
        assert body["apiKey"].startswith("lss_") and body["apiKey"] == body["key"]
        assert body["scopes"] == ["ingest", "read", "write", "admin"]
        assert (await api.with_key(body["apiKey"]).get("/api/keys"))[0] == 200
    status, body = await api.post(
        "/api/auth/generate-api-key", {"name": "reader", "scopes": ["read"]}
    )
    assert status == 201 and body["scopes"] == ["read"], body


async def test_scoring_rules_lists_and_creates_rules(api: Api) -> None:
    status, body = await api.post(
        "/api/scoring-rules",
        {"eventType": "webinar_attended", "points": 30, "description": "Attended a webinar"},
    )
    assert status == 201, body
    assert body == {"eventType": "webinar_attended", "points": 30, "active": True}
    status, body = await api.get("/api/scoring-rules")
    assert status == 200, body
    assert {"eventType": "webinar_attended", "points": 30, "active": True} in body["rules"]
    assert (await api.get("/api/rules"))[1] == body


async def test_events_ingest_is_the_sdk_route(api: Api) -> None:
    event = {"apiKey": api.api_key, "event": "page_view", "anonymousId": "sdk-visitor"}
    status, body = await api.with_key("").post("/api/events/ingest", event)
    assert status == 202, body
    assert body["eventId"]
