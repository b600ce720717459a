"""Deployments (one topic prefix + MongoDB database each), their project, worker subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from app.mongo import Mongo
from app.projects import ProjectRegistry
from app.settings import Settings
from app.topics import ensure_topics

__all__ = [
    "CpuClock",
    "Deployment",
    "WorkerProcess",
    "free_port",
    "proc_cpu_seconds",
    "proc_peak_rss_mb",
    "proc_rss_mb",
    "stop_many",
]

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float | None:
    """Resident memory of a process now (VmRSS), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def proc_peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class CpuClock:
    """CPU used by a set of processes over a wall-clock window, as cores (1.0 = one full core)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {n: proc_cpu_seconds(p) for n, p in self.pids.items()}
        self.machine0 = _machine_busy()

    def read(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self.t0)
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            before, now = self.c0.get(name), proc_cpu_seconds(pid)
            if before is not None and now is not None:
                out[name] = round((now - before) / wall, 2)
        busy0, total0 = self.machine0
        busy1, total1 = _machine_busy()
        if total1 > total0:
            out["machine"] = round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2)
        return out


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


@dataclass
class Deployment:
    """One leadscore deployment: its topics (`{prefix}.*`), consumer group and MongoDB database."""

    bootstrap: str
    mongo_url: str
    prefix: str
    workdir: Path
    partitions: int = 8
    project_id: str = ""
    api_key: str = ""
    workers: list[WorkerProcess] = field(default_factory=list)

    def settings(self, **overrides: object) -> Settings:
        base = Settings.from_env()
        return dataclasses.replace(
            base,
            kafka_bootstrap_servers=self.bootstrap,
            mongo_url=self.mongo_url,
            mongo_db=self.prefix,
            partitions=self.partitions,
            topic_prefix=self.prefix,
            **overrides,  # type: ignore[arg-type]
        )

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def group(self, version: int = 1) -> str:
        return self.prefix if version <= 1 else f"{self.prefix}-v{version}"

    def changelog(self, table: str, version: int = 1) -> str:
        return f"{self.group(version)}-{table}-changelog"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in list(env):  # nothing of the caller's leadscore config leaks in
            if name.startswith("LEADSCORE_") or name in ("MONGO_DB", "WEB_PORT", "WEB_HOST"):
                del env[name]
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            MONGO_URL=self.mongo_url,
            MONGO_DB=self.prefix,
            LEADSCORE_TOPIC_PREFIX=self.prefix,
            LEADSCORE_PARTITIONS=str(self.partitions),
            LEADSCORE_ADMIN_TOKEN=ADMIN_TOKEN,
            LEADSCORE_SWEEP_INTERVAL="86400",  # no decay sweep inside a measurement
            # the per-key rate limit (2,000/s by default) would answer the load with 429s:
            # the benchmark measures the pipeline, not the limiter
            LEADSCORE_RATE_LIMIT="1000000/second",
            LEADSCORE_RATE_LIMIT_PUBLISHABLE="1000000/second",
            LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
        )
        return env

    async def create(self) -> None:
        """Topics (as a worker creates them) and one project, published to the projects topic."""
        settings = self.settings()
        await ensure_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        mongo = Mongo(settings)
        await producer.start()
        try:

            async def publish(key: bytes, value: bytes) -> None:
                await producer.send_and_wait(settings.topic("projects"), key=key, value=value)

            record, api_key = await ProjectRegistry(mongo, publish).create(f"bench-{self.prefix}")
        finally:
            await producer.stop()
            mongo.close()
        self.project_id, self.api_key = record.projectId, api_key

    def worker(self, name: str, datadir_of: str | None = None, **env: str) -> WorkerProcess:
        """A worker; `datadir_of` reuses the table state directory of an earlier worker."""
        w = WorkerProcess(self, name, env, datadir_of)
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        stop_many(self.workers)


class WorkerProcess:
    """A `leadscore worker` subprocess with its own port, data dir and log file."""

    def __init__(
        self, deployment: Deployment, name: str, env: dict[str, str], datadir_of: str | None
    ) -> None:
        self.deployment = deployment
        self.name = name
        self.extra_env = env
        self.port = free_port()
        self.datadir = deployment.workdir / f"{deployment.prefix}-{datadir_of or name}"
        self.log_path = deployment.workdir / f"{deployment.prefix}-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = self.deployment.env()
        env.update(WEB_PORT=str(self.port), LEADSCORE_DATA_DIR=str(self.datadir))
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    async def wait_healthy(self, timeout: float = 120.0) -> float:
        """Seconds from start until `GET /api/health` answered 200."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while time.monotonic() < deadline:
                self.check()
                try:
                    async with http.get(f"{self.url}/api/health") as resp:
                        if resp.status == 200:
                            return time.monotonic() - self.started_at
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.25)
        raise TimeoutError(f"worker {self.name} not healthy in {timeout:.0f} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM (Faust's graceful shutdown) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def stop_many(workers: list[WorkerProcess]) -> None:
    """Stop workers together: SIGTERM to all, then wait for each (SIGKILL after 30 s)."""
    for w in workers:
        with contextlib.suppress(Exception):
            w.terminate()
    for w in workers:
        with contextlib.suppress(Exception):
            w.stop()
