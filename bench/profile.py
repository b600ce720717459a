"""Sampling profile of a running worker with py-spy, summarized as where its CPU time goes.

py-spy is not a project dependency: `pip install py-spy` into the venv. Without it (or without
ptrace rights) the benchmark runs without a profile and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["ProfileRun", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# frames that only carry the event loop / CLI scaffolding: not interesting as "inclusive" costs
_SCAFFOLD = (
    "<frozen runpy>",
    "click/",
    "mode/worker.py",
    "app/cli.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "asyncio/runners.py",
    "threading.py",
    "mode/threads.py",
)


def _pyspy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class ProfileRun:
    """`py-spy record` on a pid for a fixed time, in the background."""

    def __init__(
        self, pid: int, seconds: float, out: Path, rate: int = 50, start_after: float = 0.0
    ) -> None:
        self.out = out
        self.error: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        exe = _pyspy()
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return
        argv = [
            exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate),
            "-f", "raw", "--gil", "--threads", "-o", str(out),
        ]  # fmt: skip
        if start_after > 0:  # let the measured load begin first
            argv = ["sh", "-c", f'sleep {start_after}; exec "$@"', "py-spy", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        if self.proc is None:
            return {"error": self.error}
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.is_file():
            return {"error": f"py-spy failed ({self.proc.returncode}): {output[-300:]}"}
        summary = summarize(self.out.read_text())
        summary["pyspy"] = output.strip().splitlines()[-3:] if output else []
        return summary

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


_ROOT = Path(__file__).resolve().parents[1]  # the checkout, wherever it is


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", f"{_ROOT}/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), ""
    return m.group("func"), _short(m.group("file"))


def _area(file: str) -> str:
    if file.startswith(("agents/", "tables/", "core/", "app/", "web/", "store/")):
        return "leadscore " + file.split("/", 1)[0] + "/"
    top = file.split("/", 1)[0]
    return {
        "asyncio": "asyncio (event loop)",
        "pymongo": "motor/pymongo/bson",
        "motor": "motor/pymongo/bson",
        "bson": "motor/pymongo/bson",
        "logging": "logging",
    }.get(top, top)


def summarize(raw: str, top: int = 20) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            frames = frames[1:]
        parsed = [_parse(f) for f in frames if f]
        if not parsed:
            continue
        total += count
        is_main = any(f.endswith("worker.py") or "execute_from_commandline" in n for n, f in parsed)
        threads["main (event loop)" if is_main else "other threads (aiokafka consumer thread)"] += (
            count
        )
        func, file = parsed[-1]
        self_time[f"{func} ({file})"] += count
        areas[_area(file)] += count
        seen = set()
        for func, file in parsed:
            if file.startswith(_SCAFFOLD):
                continue
            name = f"{func} ({file})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += count

    def pct(c: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"frame": k, "samples": v, "percent": round(100 * v / max(1, total), 1)}
            for k, v in c.most_common(n)
        ]

    return {
        "samples": total,
        "threads": pct(threads, 5),
        "byArea": pct(areas, 14),
        "selfTop": pct(self_time, top),
        "inclusiveTop": pct(inclusive, top + 10),
    }
