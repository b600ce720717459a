"""Users and sessions, limits, the migration of older keys, and the audit log (SPEC 10), on a
worker with short settings: sessions of 8 s, 20 requests a minute per credential, 4 keys per
project, logins slowed after 3 failures and refused after 5."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from motor.motor_asyncio import AsyncIOMotorClient

from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    WorkerProcess,
    admin_headers,
    bearer,
    create_key,
    create_member,
    create_project,
    eventually,
    login,
    start_worker,
)

pytestmark = pytest.mark.integration

PASSWORD = "a long passphrase"
SESSION_TTL = 8
RATE = 20
MAX_KEYS = 4


@pytest.fixture(scope="module")
async def short(
    stack: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Deployment, WorkerProcess]]:
    deployment = Deployment.on(
        stack,
        LEADSCORE_SESSION_TTL=str(SESSION_TTL),
        LEADSCORE_RATE_LIMIT=f"{RATE}/minute",
        LEADSCORE_MAX_KEYS=str(MAX_KEYS),
        LEADSCORE_LOGIN_SLOW_AFTER="3",
        LEADSCORE_LOGIN_LOCK_AFTER="5",
        LEADSCORE_LOGIN_WINDOW="60",
        LEADSCORE_KEY_USAGE_FLUSH="0.5",
    )
    tmp: Path = tmp_path_factory.mktemp("access")
    proc = await start_worker(deployment, tmp, "short")
    try:
        yield deployment, proc
    finally:
        proc.stop()


@pytest.fixture
async def project(
    http: aiohttp.ClientSession, short: tuple[Deployment, WorkerProcess]
) -> tuple[Api, str]:
    deployment, proc = short
    pid, key = await create_project(http, proc.url, deployment.admin_token, uuid.uuid4().hex)
    return Api(http, proc.url, key), pid


def _email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


async def test_login_gives_a_bearer_token_and_a_safe_cookie_and_logout_ends_it(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, pid = project
    deployment, _ = short
    email = _email("owner")
    await create_member(api, deployment, pid, email, PASSWORD, "owner")
    anonymous = api.with_key("")
    async with api.http.post(
        f"{api.base_url}/api/auth/login", json={"email": email.upper(), "password": PASSWORD}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        cookie = resp.headers["Set-Cookie"]
    token = body["token"]
    assert token.startswith("lst_") and body["user"]["email"] == email
    assert f"leadscore_session={token}" in cookie
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"):
        assert flag in cookie, cookie
    status, _ = await anonymous.request("GET", "/api/leads", headers=bearer(token))
    assert status == 200
    cookie_header = {"Cookie": f"leadscore_session={token}"}
    status, _ = await anonymous.request("GET", "/api/leads", headers=cookie_header)
    assert status == 200
    status, body = await anonymous.post("/api/auth/logout", headers=cookie_header)
    assert status == 200, body
    for headers in (bearer(token), cookie_header):  # the worker that revoked it knows at once
        status, _ = await anonymous.request("GET", "/api/leads", headers=headers)
        assert status == 401


async def test_wrong_password_is_401_and_unknown_email_too(project: tuple[Api, str]) -> None:
    api, _ = project
    status, body = await api.with_key("").post(
        "/api/auth/login", {"email": _email("ghost"), "password": PASSWORD}
    )
    assert status == 401, body


async def test_password_change_needs_the_current_one_and_ends_other_sessions(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, pid = project
    deployment, _ = short
    email = _email("member")
    first = await create_member(api, deployment, pid, email, PASSWORD, "member")
    second = await login(api, email, PASSWORD)
    anonymous = api.with_key("")
    new = {"currentPassword": "not it at all", "newPassword": "another long passphrase"}
    status, body = await anonymous.request("PUT", "/api/auth/password", new, bearer(first))
    assert status == 403, body
    new["currentPassword"] = PASSWORD
    status, body = await anonymous.request("PUT", "/api/auth/password", new, bearer(first))
    assert status == 200, body
    status, _ = await anonymous.request("GET", "/api/leads", headers=bearer(first))
    assert status == 200  # the session that changed it lives on
    status, _ = await anonymous.request("GET", "/api/leads", headers=bearer(second))
    assert status == 401  # every other one ended
    await login(api, email, "another long passphrase")


async def test_sessions_expire(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, pid = project
    deployment, _ = short
    token = await create_member(api, deployment, pid, _email("viewer"), PASSWORD, "viewer")
    started = time.monotonic()
    anonymous = api.with_key("")
    status, _ = await anonymous.request("GET", "/api/leads", headers=bearer(token))
    assert status == 200
    await eventually(
        lambda: anonymous.request("GET", "/api/leads", headers=bearer(token)),
        lambda r: r[0] == 401,
        timeout=SESSION_TTL + 20,
        interval=1.0,  # within the rate limit of the session
    )
    assert time.monotonic() - started >= SESSION_TTL - 1


async def test_requests_beyond_the_rate_limit_get_429_with_retry_after(
    project: tuple[Api, str],
) -> None:
    api, _ = project
    _, key = await create_key(api, "busy", ["read"])
    busy = api.with_key(key)
    seen: list[int] = []
    for _ in range(RATE + 3):
        async with api.http.get(f"{api.base_url}/api/rules", headers={"X-API-Key": key}) as r:
            seen.append(r.status)
            headers = dict(r.headers)
    assert seen[:RATE] == [200] * RATE and set(seen[RATE:]) == {429}, seen
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Limit"] == str(RATE) and headers["RateLimit-Remaining"] == "0"
    status, _ = await api.get("/api/rules")  # another credential has its own budget
    assert status == 200
    status, _ = await busy.get("/api/rules")
    assert status == 429


async def test_a_project_holds_a_limited_number_of_keys(project: tuple[Api, str]) -> None:
    api, _ = project
    for i in range(MAX_KEYS - 1):  # the project's first key counts
        await create_key(api, f"k{i}", ["ingest"])
    status, body = await api.post("/api/keys", {"name": "one too many", "scopes": ["ingest"]})
    assert status == 409, body


async def test_keys_are_listed_without_secrets_and_with_last_use(project: tuple[Api, str]) -> None:
    api, _ = project
    key_id, key = await create_key(api, "reader", ["read"])
    assert key.startswith("lss_")
    status, _ = await api.with_key(key).get("/api/leads")
    assert status == 200

    async def listed() -> dict[str, Any]:
        status, body = await api.get("/api/keys")
        assert status == 200, body
        return {k["id"]: k for k in body["keys"]}

    keys = await eventually(listed, lambda ks: ks[key_id]["lastUsedAt"] is not None, timeout=20)
    mine = keys[key_id]
    assert mine["name"] == "reader" and mine["kind"] == "secret" and mine["scopes"] == ["read"]
    assert mine["prefix"] == key[:8] and mine["createdAt"]
    assert key not in str(keys) and all("hash" not in k for k in keys.values())


async def _raw_get(port: int, headers: bytes) -> bytes:
    """A GET with header bytes no HTTP client library would send; returns the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/leads HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return bytes(status_line.split()[1])


async def test_another_projects_key_cannot_see_or_revoke_a_key(
    http: aiohttp.ClientSession,
    project: tuple[Api, str],
    short: tuple[Deployment, WorkerProcess],
) -> None:
    api, _ = project
    deployment, proc = short
    key_id, key = await create_key(api, "victim", ["read"])
    _, other_key = await create_project(http, proc.url, deployment.admin_token, "intruder")
    intruder = Api(http, proc.url, other_key)
    status, body = await intruder.request("DELETE", f"/api/keys/{key_id}")
    assert status == 404, body
    status, body = await intruder.get("/api/keys")
    assert status == 200 and key_id not in str(body), body
    assert (await api.with_key(key).get("/api/leads"))[0] == 200


async def test_non_utf8_credential_bytes_are_401_not_500(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, _ = project
    _, proc = short
    for header in (
        b"X-API-Key: lss_\xff\xfe",
        b"Authorization: Bearer \xc3\x28",
        b"Cookie: leadscore_session=\xff",
        b"X-Project-Id: prj_\xff",
    ):
        assert await _raw_get(proc.port, header) == b"401", header
    # another application's cookie on the same host is none of our business
    valid = b"X-API-Key: " + api.api_key.encode()
    assert await _raw_get(proc.port, valid + b"\r\nCookie: theme=\xff\xfe") == b"200"


async def test_keys_issued_before_scopes_keep_working_with_every_scope(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    """An old worker wrote `keyHashes` into MongoDB and onto the projects topic."""
    api, pid = project
    deployment, _ = short
    old_key = "lsk_" + secrets.token_urlsafe(32)
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(deployment.mongo_url)
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    try:
        projects = client[deployment.prefix].projects
        doc = await projects.find_one({"projectId": pid}, {"_id": 0})
        assert doc is not None
        old = {k: v for k, v in doc.items() if k != "keys"}
        old["keyHashes"] = [hashlib.sha256(old_key.encode()).hexdigest()]
        old["version"] = doc["version"] + 1
        await projects.replace_one({"projectId": pid}, old)
        wire = {**old, "rules": {r.pop("eventType"): r for r in old["rules"]}}
        await producer.send_and_wait(
            f"{deployment.prefix}.projects", key=pid.encode(), value=orjson.dumps(wire)
        )
    finally:
        await producer.stop()
        client.close()
    legacy = api.with_key(old_key)
    await eventually(lambda: legacy.get("/api/leads"), lambda r: r[0] == 200, timeout=20)
    assert (await legacy.put("/api/rules/legacy_rule", {"points": 7}))[0] == 200  # write
    assert (await legacy.post("/api/events", {"eventType": "x", "leadId": "l"}))[0] == 202
    status, body = await legacy.get("/api/keys")  # admin
    assert status == 200, body
    (migrated,) = body["keys"]
    assert migrated["kind"] == "secret" and migrated["prefix"] == "lsk_"
    assert migrated["scopes"] == ["ingest", "read", "write", "admin"]
    assert (await api.get("/api/leads"))[0] == 401  # the replaced record had only the old key
    status, body = await legacy.request("DELETE", f"/api/keys/{migrated['id']}")
    assert status == 200, body
    assert (await legacy.get("/api/leads"))[0] == 401


async def test_an_unreadable_project_record_does_not_stop_the_worker(
    http: aiohttp.ClientSession, short: tuple[Deployment, WorkerProcess]
) -> None:
    """SPEC 12: the directory skips what it cannot read (and health names it, issue 10); every
    other project keeps working."""
    deployment, proc = short
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in (b"not json", orjson.dumps({"projectId": "prj_x", "keys": "many"})):
            await producer.send_and_wait(f"{deployment.prefix}.projects", key=b"prj_x", value=value)
    finally:
        await producer.stop()

    async def health() -> tuple[int, Any]:
        async with http.get(f"{proc.url}/api/health") as resp:
            return resp.status, await resp.json()

    status, body = await eventually(
        health, lambda r: "prj_x" in r[1].get("skippedProjects", {}), timeout=30
    )
    assert status == 503 and body["status"] == "degraded", body
    _, key = await create_project(http, proc.url, deployment.admin_token, "after garbage")
    assert (await Api(http, proc.url, key).get("/api/leads"))[0] == 200
    assert proc.proc is not None and proc.proc.poll() is None


async def test_the_audit_log_records_who_changed_what_before_and_after(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, pid = project
    deployment, _ = short
    assert (await api.put("/api/rules/page_view", {"points": 7}))[0] == 200
    assert (await api.put("/api/settings", {"graceDays": 3}))[0] == 200
    key_id, _ = await create_key(api, "audited", ["read"])
    assert (await api.request("DELETE", f"/api/keys/{key_id}"))[0] == 200
    email = _email("auditor")
    token = await create_member(api, deployment, pid, email, PASSWORD, "admin")
    status, body = await api.with_key("").request(
        "GET", "/api/audit-log?limit=4", headers=bearer(token)
    )
    assert status == 200, body
    newest = body["entries"]
    assert [e["action"] for e in newest] == [
        "member.put",
        "key.revoke",
        "key.create",
        "settings.put",
    ]
    assert newest[0]["actor"] == {"kind": "admin"} and newest[0]["after"] == "admin"
    assert newest[1]["before"]["id"] == key_id and newest[1]["after"] is None
    assert newest[3]["before"]["graceDays"] == 7 and newest[3]["after"]["graceDays"] == 3
    assert newest[3]["actor"]["kind"] == "key" and newest[3]["actor"]["prefix"].startswith("lss_")
    status, body = await api.get("/api/audit-log?limit=2&offset=4")
    assert status == 200, body
    rule = body["entries"][0]
    assert rule["action"] == "rule.put" and rule["target"] == "page_view"
    assert rule["before"] == {"points": 5, "active": True} and rule["after"]["points"] == 7
    viewer = await create_member(api, deployment, pid, _email("viewer"), PASSWORD, "viewer")
    status, _ = await api.with_key("").request("GET", "/api/audit-log", headers=bearer(viewer))
    assert status == 403


async def test_the_first_user_can_be_created_from_the_command_line(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    api, pid = project
    deployment, _ = short
    email = _email("first")
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "user",
        "create",
        "--email",
        email,
        "--password",
        PASSWORD,
        "--project",
        pid,
        "--role",
        "owner",
        cwd=ROOT,
        env=deployment.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert orjson.loads(out.splitlines()[-1])["roles"] == [{"projectId": pid, "role": "owner"}]
    token = await login(api, email, PASSWORD)
    owner = api.with_key("")
    status, body = await owner.request("PUT", "/api/settings", {"graceDays": 9}, bearer(token))
    assert status == 200, body


async def test_a_user_of_several_projects_names_one_and_sees_only_those(
    http: aiohttp.ClientSession, short: tuple[Deployment, WorkerProcess]
) -> None:
    deployment, proc = short
    pid_a, key_a = await create_project(http, proc.url, deployment.admin_token, "multi A")
    pid_b, _ = await create_project(http, proc.url, deployment.admin_token, "multi B")
    pid_c, _ = await create_project(http, proc.url, deployment.admin_token, "multi C")
    api_a = Api(http, proc.url, key_a)
    email = _email("consultant")
    token = await create_member(api_a, deployment, pid_a, email, PASSWORD, "viewer")
    status, body = await api_a.with_key("").request(
        "PUT", f"/api/members/{email}", {"role": "member"}, admin_headers(deployment, pid_b)
    )
    assert status == 200, body
    user = api_a.with_key("")

    async def current(project_id: str | None) -> tuple[int, Any]:
        headers = bearer(token) | ({"X-Project-Id": project_id} if project_id else {})
        return await user.request("GET", "/api/projects/current", headers=headers)

    status, body = await current(None)
    assert status == 400 and body["fields"][0]["field"] == "X-Project-Id", body
    for pid in (pid_a, pid_b):
        status, body = await eventually(lambda p=pid: current(p), lambda r: r[0] == 200)
        assert body["projectId"] == pid
    status, _ = await current(pid_c)
    assert status == 404  # no role there: as if it did not exist
    rule = {"points": 1}
    headers_a = bearer(token) | {"X-Project-Id": pid_a}
    headers_b = bearer(token) | {"X-Project-Id": pid_b}
    assert (await user.request("PUT", "/api/rules/x", rule, headers_a))[0] == 403  # viewer
    assert (await user.request("PUT", "/api/rules/x", rule, headers_b))[0] == 200  # member
    remove = await api_a.request("DELETE", f"/api/members/{email}")
    assert remove[0] == 200 and remove[1]["role"] is None, remove
    assert (await current(pid_a))[0] == 404  # the role is gone (at once on this process)
    assert (await current(pid_b))[0] == 200
    assert (await api_a.request("DELETE", f"/api/members/{email}"))[0] == 404


async def test_failed_logins_are_slowed_then_refused_for_a_while(
    project: tuple[Api, str], short: tuple[Deployment, WorkerProcess]
) -> None:
    """Runs last in this module: it locks this client address out of logins for the window."""
    api, pid = project
    deployment, _ = short
    email = _email("target")
    await create_member(api, deployment, pid, email, PASSWORD, "viewer")
    anonymous = api.with_key("")
    answers: list[tuple[int, float]] = []
    for _ in range(8):
        started = time.monotonic()
        status, _ = await anonymous.post("/api/auth/login", {"email": email, "password": "guess"})
        answers.append((status, time.monotonic() - started))
        if status == 429:
            break
    statuses = [s for s, _ in answers]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, answers
    assert len(statuses) <= 6, answers
    assert any(took >= 0.5 for s, took in answers if s == 401), answers  # slowed down first
    async with api.http.post(
        f"{api.base_url}/api/auth/login", json={"email": email, "password": PASSWORD}
    ) as resp:
        assert resp.status == 429  # even the right password, while locked
        assert int(resp.headers["Retry-After"]) >= 1
