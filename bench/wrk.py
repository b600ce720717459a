"""`wrk` (Debian package) as the preferred HTTP load generator: C, so on a 2-core machine it
leaves more CPU to the worker than the Python generator. Installed with apt-get only when missing
(and only when we are root); callers fall back to `bench.loadgen` when it is unavailable."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ensure_wrk", "run_wrk"]

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def ensure_wrk(install: bool = True) -> str | None:
    found = shutil.which("wrk")
    if found or not install:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(
            [apt, "install", "-y", "-q", "--no-install-recommends", "wrk"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=240,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("wrk")


def _script(mode: str, api_key: str, batch_body: bytes | None) -> str:
    headers = '{["X-API-Key"]=' + json.dumps(api_key) + ', ["Content-Type"]="application/json"}'
    if mode == "batch":
        assert batch_body is not None
        return (
            'wrk.method = "POST"\n'
            f"wrk.headers = {headers}\n"
            f"wrk.body = [==[{batch_body.decode()}]==]\n"
            'wrk.path = "/api/events/batch"\n' + _DONE
        )
    types = ["page_view", "email_open", "pricing_page_visit", "download", "form_submit"]
    lua_types = "{" + ",".join(json.dumps(t) for t in types) + "}"
    return (
        f"local headers = {headers}\n"
        f"local types = {lua_types}\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        '  local body = \'{"eventType":"\' .. types[counter % 5 + 1] .. '
        '\'","leadId":"wrk-\' .. (counter % 5000) .. '
        '\'","properties":{"page":"/p/\' .. (counter % 50) .. \'"}}\'\n'
        '  return wrk.format("POST", "/api/events", headers, body)\n'
        "end\n" + _DONE
    )


def run_wrk(
    wrk: str,
    mode: str,
    url: str,
    api_key: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    batch_events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body = orjson.dumps({"events": batch_events}) if batch_events else None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(_script(mode, api_key, body))
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    match = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if match is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]}{out.stderr[-500:]}")
    r = json.loads(match.group(1))
    seconds = r["durationUs"] / 1e6
    bad = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["status"]
    size = len(batch_events) if batch_events else 1
    return {
        "generator": "wrk",
        "mode": mode,
        "concurrency": connections,
        "threads": threads,
        "batchSize": size,
        "seconds": round(seconds, 2),
        "requests": r["requests"],
        "accepted": ok,
        "errors": {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]},
        "failed": bad,
        "requestsPerSec": round(ok / seconds, 1),
        "eventsPerSec": round(ok * size / seconds, 1),
        "latency": {
            "n": r["requests"],
            "p50Ms": round(r["p50"] / 1000, 2),
            "p95Ms": round(r["p95"] / 1000, 2),
            "p99Ms": round(r["p99"] / 1000, 2),
            "maxMs": round(r["max"] / 1000, 2),
            "meanMs": round(r["mean"] / 1000, 2),
        },
    }
