"""The machine and the code a benchmark ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["describe", "git_commit"]

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def git_commit() -> dict[str, Any]:
    status = [line for line in _git("status", "--porcelain").splitlines() if line.strip()]
    changed = sorted(
        line[3:] for line in status if not line[3:].startswith(("bench/", "docs/PERFORMANCE"))
    )
    return {
        "commit": _git("rev-parse", "HEAD"),
        "short": _git("rev-parse", "--short", "HEAD") or "nogit",
        "subject": _git("log", "-1", "--format=%s"),
        # other engineers edit the tree concurrently: say what differed from the commit
        "uncommittedOutsideBench": changed,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("faust-streaming", "aiokafka", "motor", "pymongo", "rocksdict", "SecantusDB"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def describe() -> dict[str, Any]:
    java = ""
    try:
        r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
        java = (r.stderr or r.stdout).splitlines()[0] if (r.stderr or r.stdout) else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpuModel": _cpu_model(),
        "ramGb": _ram_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "java": java,
        "loadAvgAtStart": _load(),
        "packages": _versions(),
    }
