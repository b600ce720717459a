"""Browser access without a browser (SPEC 10): preflights, publishable keys and allowed origins,
and the security headers every response carries."""

from __future__ import annotations

import aiohttp
import pytest

from tests.integration.support import Api, create_key

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"
EVIL = "https://evil.example"
EVENT_ROUTES = ["/api/events", "/api/events/batch", "/api/ingest/event", "/api/events/ingest"]
READ_ROUTES = [
    "/api/projects/current",
    "/api/rules",
    "/api/scoring-rules",
    "/api/settings",
    "/api/leads",
    "/api/leads/anyone",
    "/api/leads/anyone/timeline",
    "/api/leads/anyone/intelligence",
    "/api/leaderboard",
    "/api/leaderboard/by-stage",
    "/api/keys",
    "/api/members",
    "/api/audit-log",
    "/api/admin/system-health",
    "/api/internal/table-leads",
]


async def _preflight(
    http: aiohttp.ClientSession, url: str, origin: str
) -> tuple[int, dict[str, str]]:
    async with http.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    ) as resp:
        return resp.status, dict(resp.headers)


@pytest.fixture
async def shop(api: Api) -> tuple[Api, str]:
    """A project that allows SHOP, and one of its publishable keys."""
    status, body = await api.put("/api/settings", {"allowedOrigins": [SHOP]})
    assert status == 200, body
    assert body["allowedOrigins"] == [SHOP]
    _, publishable = await create_key(api, "website", [], kind="publishable")
    assert publishable.startswith("lsp_")
    return api, publishable


async def test_preflight_is_answered_on_event_routes_for_allowed_origins_only(
    shop: tuple[Api, str],
) -> None:
    api, _ = shop
    for route in EVENT_ROUTES:
        status, headers = await _preflight(api.http, f"{api.base_url}{route}", SHOP)
        assert status == 204, (route, headers)
        assert headers["Access-Control-Allow-Origin"] == SHOP
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "content-type" in headers["Access-Control-Allow-Headers"].lower()
        assert "Origin" in headers.get("Vary", "")
        status, headers = await _preflight(api.http, f"{api.base_url}{route}", EVIL)
        assert status == 403, (route, headers)
        assert "Access-Control-Allow-Origin" not in headers
    for route in ["/api/leads", "/api/rules", "/api/keys"]:  # never for other routes
        status, headers = await _preflight(api.http, f"{api.base_url}{route}", SHOP)
        assert status >= 400, (route, status)
        assert "Access-Control-Allow-Origin" not in headers


async def test_publishable_key_sends_events_only_from_an_allowed_origin(
    shop: tuple[Api, str],
) -> None:
    api, publishable = shop
    browser = api.with_key(publishable)
    event = {"eventType": "page_view", "anonymousId": "visitor-1"}
    async with api.http.post(
        f"{api.base_url}/api/events", json=event, headers={"X-API-Key": publishable, "Origin": SHOP}
    ) as resp:
        assert resp.status == 202, await resp.text()
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    status, body = await browser.post(
        "/api/events/batch", {"events": [event]}, headers={"Origin": SHOP}
    )
    assert status == 202, body
    for route in ("/api/ingest/event", "/api/events/ingest"):  # the SDK: key in the body
        status, body = await api.with_key("").post(
            route, {**event, "event": "page_view", "apiKey": publishable}, headers={"Origin": SHOP}
        )
        assert status == 202, (route, body)
    status, body = await browser.post("/api/events", event)  # no Origin: not a browser page
    assert status == 403, body
    status, body = await browser.post("/api/events", event, headers={"Origin": EVIL})
    assert status == 403, body
    assert body["fields"][0]["field"] == "Origin"


async def test_publishable_key_reads_and_changes_nothing(shop: tuple[Api, str]) -> None:
    api, publishable = shop
    browser = api.with_key(publishable)
    for route in READ_ROUTES:
        for origin in (SHOP, None):
            status, body = await browser.request(
                "GET", route, headers={"Origin": origin} if origin else None
            )
            assert status in (401, 403), (route, origin, status, body)
    for method, route, body in [
        ("PUT", "/api/rules/page_view", {"points": 1000}),
        ("PUT", "/api/settings", {"allowedOrigins": [EVIL]}),
        ("POST", "/api/keys", {"name": "mine", "kind": "secret", "scopes": ["admin"]}),
    ]:
        status, answer = await browser.request(method, route, body, headers={"Origin": SHOP})
        assert status == 403, (route, answer)


async def test_every_response_has_the_security_headers(api: Api) -> None:
    for path in ("/api/health", "/api/leads", "/api/no-such-route"):
        async with api.http.get(f"{api.base_url}{path}", headers={"X-API-Key": api.api_key}) as r:
            assert r.headers["X-Content-Type-Options"] == "nosniff", path
            assert r.headers["X-Frame-Options"] == "DENY", path
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path


async def test_allowed_origins_must_be_origins(api: Api) -> None:
    for bad in ["*", "https://shop.example/path", "shop.example", "ftp://shop.example"]:
        status, body = await api.put("/api/settings", {"allowedOrigins": [bad]})
        assert status == 422, (bad, body)
        assert body["fields"][0]["field"].startswith("allowedOrigins"), body
