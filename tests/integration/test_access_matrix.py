"""SPEC 10 as a table: every route of a worker x every kind of credential → the status it gets.

The routes come from the worker's own router (the app imported in a subprocess with the
deployment's environment), so a route added later without a row here fails this test.

Each row says what a route needs and what an allowed caller gets. The request of a row is
chosen to have no lasting effect for allowed callers (an invalid body → 422, an unknown id →
404), so the rows can run concurrently in any order. Logout, which ends the session it is called
with, runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

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
)

pytestmark = pytest.mark.integration

# What each credential may do, written out from SPEC 10 (not taken from the code under test).
# `rules` = rules and automations, `settings` = project settings, `admin` = keys, members,
# repairs, audit log.
MAY: dict[str, set[str]] = {
    "scope:ingest": {"ingest"},
    "scope:read": {"read"},
    "scope:write": {"rules", "settings"},
    "scope:admin": {"admin"},
    "role:owner": {"ingest", "read", "rules", "settings", "admin"},
    "role:admin": {"read", "rules", "settings", "admin"},
    "role:member": {"read", "rules"},
    "role:viewer": {"read"},
    "admin-token+project": {"ingest", "read", "rules", "settings", "admin"},
    "other-project": {"ingest", "read", "rules", "settings", "admin"},  # in its own project
    "publishable": set(),  # events only, and only from an allowed Origin (test_access_cors)
    "admin-token": set(),  # deployment routes; project routes need X-Project-Id
}
CREDENTIALS = ["none", "unknown", "revoked", *MAY]

LEAD = "matrix-lead"
NO_KEY = "key_0000000000000000"
NOBODY = "nobody@example.com"


@dataclass(frozen=True)
class Row:
    need: str  # public | deployment | session | ingest | read | rules | settings | admin
    ok: int  # the status of an allowed caller
    body: Any = None
    other: int | None = None  # the status of another project's key, when not `ok`
    last: bool = False  # ends the caller's session: run after every other row
    stream: bool = False  # answers a never-ending stream: only its status is read


ROWS: dict[tuple[str, str], Row] = {
    ("GET", "/api/health"): Row("public", 200),
    ("GET", "/metrics"): Row("public", 200),
    ("POST", "/api/auth/login"): Row("public", 422, {"email": NOBODY}),
    ("POST", "/api/projects"): Row("deployment", 422, {"name": ""}),
    ("POST", "/api/users"): Row("deployment", 422, {"email": "not-an-email"}),
    ("DELETE", "/api/users/{email}/sessions"): Row("deployment", 404),
    ("PUT", "/api/auth/password"): Row("session", 422, {"newPassword": "short"}),
    ("POST", "/api/auth/logout"): Row("session", 200, last=True),
    ("GET", "/api/projects/current"): Row("read", 200),
    ("GET", "/api/rules"): Row("read", 200),
    ("GET", "/api/scoring-rules"): Row("read", 200),
    ("POST", "/api/scoring-rules"): Row("rules", 422, {"eventType": "bad type", "points": 1}),
    ("PUT", "/api/rules/{event_type}"): Row("rules", 422, {"points": "many"}),
    ("DELETE", "/api/rules/{event_type}"): Row("rules", 404),
    ("GET", "/api/settings"): Row("read", 200),
    ("PUT", "/api/settings"): Row("settings", 422, {"graceDays": -1}),
    ("POST", "/api/events"): Row("ingest", 422, {"eventType": "page_view"}),
    ("POST", "/api/events/batch"): Row("ingest", 422, {"events": []}),
    ("POST", "/api/ingest/event"): Row("ingest", 422, {"event": "page_view"}),
    ("POST", "/api/events/ingest"): Row("ingest", 422, {"event": "page_view"}),
    ("GET", "/api/leads"): Row("read", 200),
    ("GET", "/api/leads/{lead_id}"): Row("read", 200, other=404),
    ("GET", "/api/leads/{lead_id}/timeline"): Row("read", 200, other=404),
    ("GET", "/api/leads/{lead_id}/intelligence"): Row("read", 200, other=404),
    ("GET", "/api/leads/{lead_id}/export"): Row("admin", 200, other=404),
    ("DELETE", "/api/leads/{lead_id}"): Row("admin", 202, last=True),  # erases LEAD: last
    ("GET", "/api/leaderboard"): Row("read", 200),
    ("GET", "/api/leaderboard/by-stage"): Row("read", 200),
    ("POST", "/api/admin/rebuild/{lead_id}"): Row("admin", 202),
    ("POST", "/api/admin/rescore"): Row("admin", 202),
    ("GET", "/api/admin/system-health"): Row("admin", 200),
    ("GET", "/api/internal/table-leads"): Row("admin", 200),
    ("POST", "/api/keys"): Row("admin", 422, {"name": ""}),
    ("GET", "/api/keys"): Row("admin", 200),
    ("DELETE", "/api/keys/{key_id}"): Row("admin", 404),
    ("POST", "/api/auth/generate-api-key"): Row("admin", 422, {"name": ""}),
    ("POST", "/api/projects/current/keys"): Row("admin", 422, {"name": ""}),
    ("GET", "/api/members"): Row("admin", 200),
    ("PUT", "/api/members/{email}"): Row("admin", 422, {"role": "emperor"}),
    ("DELETE", "/api/members/{email}"): Row("admin", 404),
    ("GET", "/api/audit-log"): Row("admin", 200),
    ("GET", "/api/stream"): Row("read", 200, stream=True),
    # the dashboard: pages take a login session (cookie or session bearer) whose role has the
    # page's right; anything else is sent to the login page (303)
    ("GET", "/app"): Row("page:read", 200),
    ("GET", "/app/leads"): Row("page:read", 200),
    ("GET", "/app/leads/{lead_id}"): Row("page:read", 200),
    ("GET", "/app/rules"): Row("page:rules", 200),
    ("GET", "/app/settings"): Row("page:settings", 200),
    ("GET", "/app/automations"): Row("page:rules", 200),
    ("GET", "/app/keys"): Row("page:admin", 200),
    ("GET", "/app/dead-letters"): Row("page:admin", 200),
    ("GET", "/app/audit"): Row("page:admin", 200),
    ("GET", "/app/login"): Row("public", 200),
    ("POST", "/app/login"): Row("public", 422),  # no e-mail and password in the form
    ("POST", "/app/logout"): Row("public", 303),  # ends the cookie's session only
    ("GET", "/app/static/{name}"): Row("public", 200),
    ("GET", "/api/dead-letters"): Row("admin", 200),
    ("GET", "/api/dead-letters/{dl_id}"): Row("admin", 404),
    ("POST", "/api/dead-letters/redrive"): Row("admin", 422, {"reason": ""}),
    ("POST", "/api/dead-letters/purge"): Row("admin", 422, {"reason": ""}),
    ("GET", "/api/automations"): Row("read", 200),
    ("POST", "/api/automations"): Row("rules", 422, {"name": ""}),
    ("GET", "/api/automations/{automation_id}"): Row("read", 404),
    ("PUT", "/api/automations/{automation_id}"): Row("rules", 404, {"name": ""}),
    ("DELETE", "/api/automations/{automation_id}"): Row("rules", 404),
    ("POST", "/api/automations/{automation_id}/test"): Row("rules", 404),
    ("GET", "/api/automations/{automation_id}/firings"): Row("read", 404),
    ("POST", "/api/automations/{automation_id}/redeliver"): Row("rules", 404),
    ("GET", "/api/firings/{firing_id}"): Row("read", 404),
    ("POST", "/api/firings/{firing_id}/redeliver"): Row("rules", 404),
}
PATH_VALUES = {
    "dl_id": "events-0-0",
    "lead_id": LEAD,
    "event_type": "no_such_rule",
    "key_id": NO_KEY,
    "email": NOBODY,
    "name": "app.js",
    "automation_id": "aut_0000000000000000",
    "firing_id": "fir_00000000000000000000000000000000",
}

_ROUTES_SCRIPT = """
import json
import re
import app.worker
from app.topology import app
routes = app.web.web_app.router.routes()
print(json.dumps(sorted({(r.method, r.resource.canonical) for r in routes})))
"""


def served_routes(deployment: Deployment) -> set[tuple[str, str]]:
    """(method, path template) of every route a worker of this deployment serves."""
    out = subprocess.run(
        [sys.executable, "-c", _ROUTES_SCRIPT],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return {(m, p) for m, p in json.loads(out.stdout.decode().strip().splitlines()[-1])}


def expected(method: str, path: str, credential: str) -> int:
    if method == "HEAD":  # HEAD is GET without a body; 405 where there is no GET
        get = ROWS.get(("GET", path))
        return 405 if get is None else expected("GET", path, credential)
    row = ROWS[(method, path)]
    if row.need == "public":
        return row.ok
    if row.need.startswith("page:"):
        if not credential.startswith("role:"):
            return 303
        return row.ok if row.need.removeprefix("page:") in MAY[credential] else 403
    if credential in ("none", "unknown", "revoked"):
        return 401
    if row.need == "deployment":
        return row.ok if credential.startswith("admin-token") else 403
    if row.need == "session":
        return row.ok if credential.startswith("role:") else 403
    if row.need not in MAY[credential]:
        return 403
    if credential == "other-project" and row.other is not None:
        return row.other
    return row.ok


@pytest.fixture(scope="module")
async def credentials(
    http: aiohttp.ClientSession, worker: WorkerProcess, deployment: Deployment
) -> dict[str, dict[str, str]]:
    """Headers of every credential kind, for project A (with lead LEAD) and project B."""
    pid, key = await create_project(http, worker.url, deployment.admin_token, "matrix A")
    _, other_key = await create_project(http, worker.url, deployment.admin_token, "matrix B")
    api = Api(http, worker.url, key)
    creds: dict[str, dict[str, str]] = {
        "none": {},
        "unknown": {"X-API-Key": "lss_" + uuid.uuid4().hex},
        "other-project": {"X-API-Key": other_key},
        "admin-token": admin_headers(deployment),
        "admin-token+project": admin_headers(deployment, pid),
    }
    for scope in ("ingest", "read", "write", "admin"):
        creds[f"scope:{scope}"] = {"X-API-Key": (await create_key(api, scope, [scope]))[1]}
    creds["publishable"] = {"X-API-Key": (await create_key(api, "web", [], "publishable"))[1]}
    revoked_id, revoked = await create_key(api, "to revoke", ["ingest", "read", "write", "admin"])
    status, body = await api.request("DELETE", f"/api/keys/{revoked_id}")
    assert status == 200, body
    creds["revoked"] = {"X-API-Key": revoked}
    tag = uuid.uuid4().hex[:8]
    for role in ("owner", "admin", "member", "viewer"):
        token = await create_member(
            api, deployment, pid, f"{role}-{tag}@example.com", "a long passphrase", role
        )
        creds[f"role:{role}"] = bearer(token)
    status, body = await api.post("/api/events", {"eventType": "signup", "leadId": LEAD})
    assert status == 202, body
    await eventually(
        lambda: api.get(f"/api/leads/{LEAD}/timeline"), lambda r: r[0] == 200, timeout=90
    )
    assert set(creds) == set(CREDENTIALS)
    return creds


async def test_every_route_times_every_credential_gets_the_status_spec_10_gives(
    http: aiohttp.ClientSession,
    worker: WorkerProcess,
    deployment: Deployment,
    credentials: dict[str, dict[str, str]],
) -> None:
    routes = served_routes(deployment)
    templates = {(m, p) for m, p in routes if m != "HEAD"}
    assert not templates - ROWS.keys(), (
        f"routes without a row in ROWS (add one): {sorted(templates - ROWS.keys())}"
    )
    assert not ROWS.keys() - templates, f"rows of routes not served: {ROWS.keys() - templates}"
    gate = asyncio.Semaphore(16)
    # heavy admin routes run at most LEADSCORE_ADMIN_CONCURRENCY at once per process (else 429
    # "busy", tested in test_hostile_http.py): this test sends them within that bound
    heavy_gate = asyncio.Semaphore(2)
    heavy = ("/api/admin/rebuild/{lead_id}", "/api/admin/rescore", "/api/admin/system-health")

    async def call(method: str, template: str, credential: str) -> tuple[str, int, int, str]:
        path = template.format(**PATH_VALUES)
        row = ROWS.get((method, template))
        body = row.body if row is not None and method in ("POST", "PUT") else None
        if body is None and method in ("POST", "PUT"):
            body = {}
        async with (
            gate,
            heavy_gate if template in heavy else contextlib.nullcontext(),
            http.request(
                method,
                f"{worker.url}{path}",
                json=body,
                headers=credentials[credential],
                allow_redirects=False,
            ) as resp,
        ):
            text = "(a stream)" if row is not None and row.stream else await resp.text()
        want = expected(method, template, credential)
        return f"{method} {template} as {credential}", resp.status, want, text[:200]

    cases = [(m, p, c) for m, p in sorted(routes) for c in CREDENTIALS]

    def ends_session(case: tuple[str, str, str]) -> bool:
        row = ROWS.get((case[0], case[1]))
        return row is not None and row.last

    def probes_dependencies(case: tuple[str, str, str]) -> bool:
        # /api/health asks Kafka and MongoDB with short timeouts: under this test's burst it may
        # truthfully answer 503, which says nothing about credentials. It is asked afterwards.
        return case[1] == "/api/health"

    results = await asyncio.gather(
        *(call(*c) for c in cases if not ends_session(c) and not probes_dependencies(c))
    )
    results += [await call(*c) for c in cases if probes_dependencies(c)]
    results += await asyncio.gather(*(call(*c) for c in cases if ends_session(c)))
    wrong = [
        f"{what}: got {got}, want {want} ({text})"
        for what, got, want, text in results
        if got != want
    ]
    print(f"{len(results)} requests: {len(routes)} routes x {len(CREDENTIALS)} credentials")
    assert not wrong, "\n".join(wrong)


def _openapi_needs() -> dict[tuple[str, str], str]:
    """(METHOD, path with `{}` for parameters) -> `x-leadscore-needs` of web/openapi.yaml."""
    needs: dict[tuple[str, str], str] = {}
    path = method = ""
    for line in (ROOT / "web" / "openapi.yaml").read_text().splitlines():
        if line.startswith("components:"):
            break
        if line.startswith("  /") and line.endswith(":"):
            path = re.sub(r"\{[^}]*\}", "{}", line.strip()[:-1])
        elif re.fullmatch(r"    (get|put|post|delete|patch):", line):
            method = line.strip()[:-1].upper()
        elif line.strip().startswith("x-leadscore-needs:"):
            needs[(method, path)] = line.split(":", 1)[1].strip()
    return needs


def test_openapi_states_the_right_every_route_needs() -> None:
    documented = _openapi_needs()
    for (method, template), row in ROWS.items():
        key = (method, re.sub(r"\{[^}]*\}", "{}", template))
        want = "none" if row.need == "public" else row.need
        assert documented.get(key) == want, (method, template, documented.get(key), want)
