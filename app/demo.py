"""`make demo`: the full pipeline with sample data, on the local stack, in one command.

Starts the stack (devstack) and a worker, creates a demo project, sends a realistic sample
through the HTTP API (duplicates and late events included), waits until MongoDB has all of it,
then prints the leaderboard, stage counts and URLs to try.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from app.sample_data import generate

ROOT = Path(__file__).resolve().parents[1]


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def _wait_healthy(
    http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}; see .local/demo-worker.log")
        try:
            status, _ = await _json(http, "GET", f"{base}/api/health")
            if status == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("worker did not become healthy in 120 s; see .local/demo-worker.log")


async def _run(base: str, token: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        await _wait_healthy(http, base, proc)
        status, project = await _json(
            http,
            "POST",
            f"{base}/api/projects",
            json={"name": "demo"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 201, project
        key = project["apiKey"]
        headers = {"X-API-Key": key}
        workload = generate(leads=300, events=4_000, now_us=time.time_ns() // 1000)
        started = time.monotonic()
        for i in range(0, len(workload.events), 500):
            status, body = await _json(
                http,
                "POST",
                f"{base}/api/events/batch",
                json={"events": workload.events[i : i + 500]},
                headers=headers,
            )
            assert status == 202, body
        print(
            f"sent {len(workload.events)} events ({workload.distinct_event_ids} distinct, "
            f"{len(workload.events) - workload.distinct_event_ids} duplicates) for "
            f"{len(workload.lead_keys)} leads in {time.monotonic() - started:.1f} s"
        )
        while True:
            status, board = await _json(
                http, "GET", f"{base}/api/leaderboard?limit=1000", headers=headers
            )
            counted = sum(lead["eventCount"] for lead in board.get("leads", []))
            if (
                board.get("total") == len(workload.lead_keys)
                and counted == workload.distinct_event_ids
            ):
                break
            if time.monotonic() - started > 300:
                raise SystemExit(
                    f"not materialized after 300 s: {board.get('total')} leads, {counted} events"
                )
            await asyncio.sleep(0.5)
        print(
            f"scored and materialized in MongoDB {time.monotonic() - started:.1f} s "
            "after the first send\n"
        )
        print("Leaderboard (top 10)")
        print(f"{'rank':>4}  {'lead':<12} {'score':>8}  {'stage':<10} {'events':>6}  velocity")
        for lead in board["leads"][:10]:
            print(
                f"{lead['rank']:>4}  {lead['leadId']:<12} {lead['currentScore']:>8.2f}  "
                f"{lead['leadStage']:<10} {lead['eventCount']:>6}  {lead['velocityScore']}"
            )
        _, stages = await _json(http, "GET", f"{base}/api/leaderboard/by-stage", headers=headers)
        print("\nStages:", ", ".join(f"{k} {v}" for k, v in stages["stages"].items()))
        top = board["leads"][0]["leadId"]
        print(f"""
Try it (API key shown once: {key})
  curl -H 'X-API-Key: {key}' {base}/api/leaderboard
  curl -H 'X-API-Key: {key}' {base}/api/leads/{top}
  curl -H 'X-API-Key: {key}' {base}/api/leads/{top}/timeline
  curl -H 'X-API-Key: {key}' {base}/api/leads/{top}/intelligence
  curl -H 'X-API-Key: {key}' -d '{{"eventType":"demo_request","leadId":"{top}"}}' {base}/api/events
""")
        await _dashboard_login(http, base, token, project["projectId"])


DEMO_EMAIL = "demo@leadscore.local"
DEMO_PASSWORD = "leadscore-demo"


async def _dashboard_login(
    http: aiohttp.ClientSession, base: str, token: str, project_id: str
) -> None:
    """A demo owner of the demo project (created once; a later demo grants it the new project
    too), checked by logging in, and the dashboard's address."""
    admin = {"Authorization": f"Bearer {token}"}
    status, body = await _json(
        http,
        "POST",
        f"{base}/api/users",
        json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD},
        headers=admin,
    )
    assert status in (201, 409), body  # 409: made by an earlier demo on this stack
    status, body = await _json(
        http,
        "PUT",
        f"{base}/api/members/{DEMO_EMAIL}",
        json={"role": "owner"},
        headers={**admin, "X-Project-Id": project_id},
    )
    assert status == 200, body
    status, body = await _json(
        http,
        "POST",
        f"{base}/api/auth/login",
        json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD},
    )
    if status != 200:
        print(f"(the demo user exists with another password: {body})")
        return
    print(f"""Dashboard: {base}/app?project={project_id}
  log in as {DEMO_EMAIL} / {DEMO_PASSWORD} (owner of the demo project)
""")


def main() -> None:
    import devstack

    info = devstack.ensure_up()
    port = _free_port(int(os.environ.get("WEB_PORT", "6066")))
    token = os.environ.get("LEADSCORE_ADMIN_TOKEN") or secrets.token_urlsafe(16)
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=info.bootstrap_servers,
        MONGO_URL=info.mongo_url,
        WEB_PORT=str(port),
        LEADSCORE_ADMIN_TOKEN=token,
        LEADSCORE_DATA_DIR=str(ROOT / ".local" / "demo-worker"),
        LEADSCORE_SINK_WITHIN="0.1",
        # the demo is served over plain http://127.0.0.1; keep a setting made by the operator
        LEADSCORE_COOKIE_SECURE=os.environ.get("LEADSCORE_COOKIE_SECURE", "off"),
    )
    # Table state is derived (changelogs rebuild it); a fresh dir avoids stale state from an
    # earlier stack whose Kafka data was since wiped.
    shutil.rmtree(ROOT / ".local" / "demo-worker", ignore_errors=True)
    log = open(ROOT / ".local" / "demo-worker.log", "ab")  # noqa: SIM115 — the child's stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_run(base, token, proc))
        if sys.stdin.isatty():
            print("The worker keeps running; press Ctrl-C to stop it and the stack.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if info.started and not os.environ.get("LEADSCORE_KEEP_STACK"):
            devstack.shutdown()


if __name__ == "__main__":
    main()
