"""The dashboard's HTTP side without a browser: the live stream is the caller's project's only
and sees a change within moments of the event's 202; cookie sessions refuse changes from other
sites (CSRF); the login form goes only to dashboard paths."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    WorkerProcess,
    create_key,
    create_member,
    create_project,
)

pytestmark = pytest.mark.integration

PASSWORD = "a long passphrase"


async def _notices(resp: aiohttp.ClientResponse, found: list[dict[str, Any]]) -> None:
    async for line in resp.content:
        if line.startswith(b"data: "):
            found.append(orjson.loads(line[6:]))


async def test_stream_tells_the_project_s_changes_only(
    api: Api, http: aiohttp.ClientSession, worker: WorkerProcess, deployment: Deployment
) -> None:
    _, other_key = await create_project(http, worker.url, deployment.admin_token, "stream B")
    other = api.with_key(other_key)
    _, reader = await create_key(api, "reader", ["read"])
    async with http.get(
        f"{worker.url}/api/stream",
        headers={"X-API-Key": reader},
        timeout=aiohttp.ClientTimeout(total=120),
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert (await resp.content.readline()).startswith(b"retry:")
        found: list[dict[str, Any]] = []
        task = asyncio.create_task(_notices(resp, found))
        try:
            status, _ = await other.post("/api/events", {"eventType": "signup", "leadId": "b1"})
            assert status == 202
            for event_type in ("signup", "demo_request"):  # 30: warm, then 80: hot
                status, _ = await api.post("/api/events", {"eventType": event_type, "leadId": "a1"})
                assert status == 202
                sent = time.monotonic()
                count = len(found)
                while len(found) == count and time.monotonic() - sent < 60:
                    await asyncio.sleep(0.05)
                print(f"{event_type}: notice {time.monotonic() - sent:.3f}s after the 202")
        finally:
            task.cancel()
    assert [(n["type"], n["leadId"], n["leadStage"]) for n in found] == [
        ("lead.created", "a1", "warm"),
        ("lead.stage_changed", "a1", "hot"),
    ]
    assert found[1]["previousStage"] == "warm" and found[1]["event"]["eventType"] == "demo_request"


async def test_stream_needs_a_reader(api: Api, worker: WorkerProcess) -> None:
    _, ingest_only = await create_key(api, "ingest", ["ingest"])
    async with api.http.get(f"{worker.url}/api/stream") as resp:
        assert resp.status == 401
    async with api.http.get(f"{worker.url}/api/stream", headers={"X-API-Key": ingest_only}) as resp:
        assert resp.status == 403


async def test_cookie_sessions_refuse_changes_from_other_sites(
    api: Api, worker: WorkerProcess, deployment: Deployment
) -> None:
    status, project = await api.get("/api/projects/current")
    assert status == 200
    email = f"csrf-{uuid.uuid4().hex[:8]}@example.com"
    token = await create_member(api, deployment, project["projectId"], email, PASSWORD, "owner")
    cookie = {"Cookie": f"leadscore_session={token}"}
    host = worker.url.removeprefix("http://")
    rule = f"{worker.url}/api/rules/page_view"
    async with api.http.put(
        rule, json={"points": 6}, headers={**cookie, "Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["fields"][0]["field"] == "Origin"
    async with api.http.put(
        rule, json={"points": 7}, headers={**cookie, "Origin": f"http://{host}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    # the same session as a bearer token is no ambient credential: no Origin check
    async with api.http.put(
        rule,
        json={"points": 8},
        headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
    ) as resp:
        assert resp.status == 200
    status, rules = await api.get("/api/rules")
    assert {r["eventType"]: r["points"] for r in rules["rules"]}["page_view"] == 8

    # the login form: another site's post is refused; our own goes to a dashboard path only
    form = {"email": email, "password": PASSWORD, "next": "https://evil.example/"}
    async with api.http.post(
        f"{worker.url}/app/login",
        data=form,
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403 and "Set-Cookie" not in resp.headers
    async with api.http.post(
        f"{worker.url}/app/login",
        data=form,
        headers={"Origin": f"http://{host}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/app"
        assert "SameSite=Strict" in resp.headers["Set-Cookie"]


async def test_a_user_of_several_projects_picks_one(
    api: Api, http: aiohttp.ClientSession, worker: WorkerProcess, deployment: Deployment
) -> None:
    status, first = await api.get("/api/projects/current")
    assert status == 200
    second, _ = await create_project(http, worker.url, deployment.admin_token, "pick B")
    email = f"two-{uuid.uuid4().hex[:8]}@example.com"
    await create_member(api, deployment, first["projectId"], email, PASSWORD, "viewer")
    status, body = await api.with_key("").request(
        "PUT",
        f"/api/members/{email}",
        {"role": "owner"},
        headers={"Authorization": f"Bearer {deployment.admin_token}", "X-Project-Id": second},
    )
    assert status == 200, body
    status, body = await api.with_key("").post(
        "/api/auth/login", {"email": email, "password": PASSWORD}
    )
    assert status == 200, body
    session = {"Authorization": f"Bearer {body['token']}"}

    async def page(path: str) -> tuple[int, str]:
        async with http.get(f"{worker.url}{path}", headers=session, allow_redirects=False) as r:
            return r.status, await r.text()

    status, html = await page("/app/rules")
    assert status == 200 and "Choose a project" in html
    assert f"/app/rules?project={first['projectId']}" in html and f"?project={second}" in html
    status, html = await page(f"/app/rules?project={first['projectId']}")
    assert status == 403  # a viewer there
    status, html = await page(f"/app/rules?project={second}")
    assert status == 200 and 'id="rule-form"' in html and f'data-project="{second}"' in html
    # the live stream: a browser's EventSource names the project in the query
    status, _ = await page("/api/stream")
    assert status == 400  # which project?
    async with http.get(f"{worker.url}/api/stream?project={second}", headers=session) as resp:
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"retry:")


async def test_the_worker_serves_the_sdk_and_the_dashboard_files(
    http: aiohttp.ClientSession, worker: WorkerProcess
) -> None:
    async with http.get(f"{worker.url}/app/static/leadscore.min.js") as resp:
        assert resp.status == 200
        assert "javascript" in resp.headers["Content-Type"]
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # any website may load it
        assert await resp.read() == (ROOT / "sdk" / "js" / "dist" / "leadscore.min.js").read_bytes()
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        async with http.get(f"{worker.url}/app/static/{name}") as resp:
            assert resp.status == 200 and kind in resp.headers["Content-Type"]
    async with http.get(f"{worker.url}/app/static/..%2Fpages.py") as resp:
        assert resp.status == 404
    async with http.get(f"{worker.url}/app/login") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
