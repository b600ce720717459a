"""The benchmark suite: every measurement, in one run, on one broker and one MongoDB-wire server.

Deployments (each its own topic prefix, consumer group and MongoDB database):

- `score` — the events topic pre-filled with the main workload. Used for the pass-through
  reference (1), the scoring agent alone (2), the changelog bytes (8), two workers (6, app
  version 2), the replay (7, app version 3) and then HTTP ingest (4) on that warm worker.
- `deep` — the same kind of workload with 10x more events per lead (8).
- `mat` — the materialization workload with the sink on (3, profiled), the MongoDB raw reference
  on the very LeadChanges the sink consumed (3), then end-to-end latency (5) on that worker.
- `k` — the same workload scored with the sink off, then a `leadscore sink` process alone on the
  pre-filled lead-changes against the server's own rate for the same writes (3c; also
  `python -m bench --only sink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.deploy import (
    CpuClock,
    Deployment,
    WorkerProcess,
    proc_peak_rss_mb,
    proc_rss_mb,
    stop_many,
)
from bench.kafkautil import (
    OffsetProbe,
    ScoredCounter,
    create_topic,
    delete_topics,
    list_topics,
    produce_all,
    scan_topic,
)
from bench.profile import ProfileRun
from bench.stats import median_run, steady_rate
from bench.workload import WireWorkload, build
from bench.wrk import ensure_wrk, run_wrk

__all__ = ["DEFAULT", "QUICK", "Sizes", "Suite"]

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.2
SINK_BATCH = 1_000  # the worker's default LEADSCORE_SINK_BATCH (the bench does not change it)


@dataclass(frozen=True)
class Sizes:
    name: str
    leads: int  # `score` deployment
    events: int
    inorder_events: int  # `inorder`: the same kind of workload without late events or duplicates
    deep_leads: int  # `deep`: deep_events over deep_leads = 10x the events per lead of `score`
    deep_events: int
    mat_leads: int  # `mat`: the sink's rate is bounded by the MongoDB-wire server
    mat_events: int
    raw_changes: int  # LeadChanges written in the MongoDB raw reference, per variant
    passthrough_repeats: int
    http_seconds: float
    single_concurrency: tuple[int, ...]
    batch_size: int
    batch_concurrency: int
    latency: tuple[tuple[int, float], ...]  # (events/s, seconds)
    latency_settle: float
    profile_seconds: float
    lag_wait: float  # longest wait for the group's committed lag to reach 0 after the last change
    standby_variant: bool  # also measure two workers with LEADSCORE_STANDBY_REPLICAS=0
    two_workers: bool = True  # measure (6); --quick leaves it out to stay near a minute
    deep: bool = True  # measure the `deep` workload of (8); likewise
    ingest_process: bool = True  # measure (4b), ingest through a `leadscore ingest`; likewise
    sink_process: bool = True  # measure (3b), the sink in a `leadscore sink` process; likewise
    sink_alone: bool = True  # measure (3c), that process alone on pre-filled lead-changes; likewise
    memory_leads: int = 400_000  # (10): Zipf gives ~28 % of them events: 110,501 active
    memory_events: int = 1_000_000
    memory: bool = True  # measure (10); --quick leaves it out
    scoring_repeats: int = 3  # runs of (2) and (2b), the median reported; --quick: 1
    # runs of (9) with and without rules, alternating, the medians compared: single runs move by
    # ±8 % on two cores, as much as the difference measured; --quick: 1
    automation_repeats: int = 5


QUICK = Sizes(
    name="quick",
    leads=600,
    events=4_000,
    inorder_events=2_000,
    deep_leads=30,
    deep_events=2_000,
    mat_leads=300,
    mat_events=1_500,
    raw_changes=1_000,
    passthrough_repeats=2,
    http_seconds=3,
    single_concurrency=(16,),
    batch_size=1_000,
    batch_concurrency=4,
    latency=((200, 5.0),),
    latency_settle=15.0,
    profile_seconds=6,
    lag_wait=0.0,
    standby_variant=False,
    two_workers=False,
    deep=False,
    ingest_process=False,
    sink_process=False,
    sink_alone=False,
    memory=False,
    scoring_repeats=1,
    automation_repeats=1,
)
DEFAULT = Sizes(
    name="default",
    leads=2_400,
    events=24_000,
    inorder_events=16_000,
    deep_leads=160,
    deep_events=16_000,
    mat_leads=1_200,
    mat_events=12_000,
    raw_changes=5_000,
    passthrough_repeats=5,
    http_seconds=10,
    single_concurrency=(4, 32),
    batch_size=1_000,
    batch_concurrency=4,
    latency=((200, 20.0), (1_000, 10.0)),
    latency_settle=30.0,
    profile_seconds=20,
    lag_wait=8.0,
    standby_variant=True,
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Suite:
    sizes: Sizes
    bootstrap: str
    mongo_url: str
    services: Callable[[], dict[str, int]]  # current pids of the broker(s) and MongoDB server
    kafka_log_dirs: list[Path]
    run_id: str = field(default_factory=lambda: time.strftime("%m%d%H%M") + secrets.token_hex(2))
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    deployments: list[Deployment] = field(default_factory=list)
    extra_pids: dict[str, int] = field(default_factory=dict)
    only: str | None = None  # run one group of rows (`python -m bench --only automation`)

    @property
    def workdir(self) -> Path:
        return ROOT / ".local" / "bench" / self.run_id

    def deployment(self, name: str) -> Deployment:
        d = Deployment(
            self.bootstrap, self.mongo_url, f"bench{self.run_id}{name}", self.workdir, partitions=8
        )
        self.deployments.append(d)
        return d

    def cpu(self, workers: Sequence[WorkerProcess] = ()) -> CpuClock:
        pids = self.services()  # re-read: a test session sharing the stack may restart MongoDB
        for w in workers:
            pids[f"worker {w.name}"] = w.pid
        return CpuClock(pids)

    # -- the run -------------------------------------------------------------------------------
    async def run(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.probe = OffsetProbe(self.bootstrap)
        await self.probe.start()
        try:
            if self.only == "automation":
                await self._phase("automation", self.automation_deployments, top=True)
                return
            if self.only == "sink":
                await self._phase("sink", self.sink_alone_deployment, top=True)
                return
            if self.only == "scoring":
                await self._phase("score", self.scoring_only, top=True)
                await self._phase("inorder", self.inorder_deployment, top=True)
                return
            if self.only == "memory":
                await self._phase("memory", self.memory_deployment, top=True)
                return
            if self.only == "latency":  # (3), (5), then (3b), (5b) when sizes ask for them
                await self._phase("mat", self.mat_deployment, top=True)
                return
            await self._phase("score", self.score_deployment, top=True)
            await self._phase("inorder", self.inorder_deployment, top=True)
            if self.sizes.deep:
                await self._phase("deep", self.deep_deployment, top=True)
            await self._phase("mat", self.mat_deployment, top=True)
            if self.sizes.sink_alone:
                await self._phase("sinkAlone", self.sink_alone_deployment, top=True)
            await self._phase("automation", self.automation_deployments, top=True)
            if self.sizes.memory:
                await self._phase("memory", self.memory_deployment, top=True)
        finally:
            await self.probe.stop()

    async def _phase(self, name: str, fn: Any, top: bool = False) -> None:
        try:
            await fn()
        except Exception as exc:  # one failed phase must not lose the others' numbers
            log(f"phase {name} failed: {exc!r}")
            self.errors[name] = f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            if top:  # a deployment's phase ends with all of its workers stopped
                for d in self.deployments:
                    d.stop_all()

    async def cleanup(self, keep: bool) -> None:
        for d in self.deployments:
            d.stop_all()
        if keep:
            return
        prefixes = tuple(d.prefix for d in self.deployments)
        with contextlib.suppress(Exception):
            topics = [t for t in await list_topics(self.bootstrap) if t.startswith(prefixes)]
            await delete_topics(self.bootstrap, topics)
        with contextlib.suppress(Exception):
            from motor.motor_asyncio import AsyncIOMotorClient

            client: Any = AsyncIOMotorClient(self.mongo_url, serverSelectionTimeoutMS=5_000)
            for d in self.deployments:
                await client.drop_database(d.prefix)
            client.close()
        for d in self.deployments:
            for w in d.workers:
                shutil.rmtree(w.datadir, ignore_errors=True)

    # -- deployments ---------------------------------------------------------------------------
    async def prepare(self, d: Deployment, leads: int, events: int) -> WireWorkload:
        await d.create()
        workload = build(d.project_id, leads=leads, events=events)
        seconds = await produce_all(self.bootstrap, d.topic("events"), workload.records)
        log(
            f"{d.prefix}: {workload.total} events for {workload.leads} leads produced in "
            f"{seconds:.1f} s ({workload.total / seconds:,.0f}/s)"
        )
        return workload

    async def scoring_only(self) -> None:
        """(1) and (2) alone: the reference and the scoring agent on the same workload."""
        await self._scoring_alone(
            profile=(self.workdir / "profile-scoring.txt", self.sizes.profile_seconds)
        )

    async def _scoring_alone(
        self, profile: tuple[Path, float] | None = None
    ) -> tuple[Deployment, WireWorkload]:
        """The `score` deployment: (1), (1b) and (2) on its pre-filled events topic."""
        s = self.sizes
        d = self.deployment("s")
        workload = await self.prepare(d, s.leads, s.events)
        self.results["workloads"] = {"score": workload.describe()}
        await self._phase("passthrough", lambda: self.passthrough(d, workload))
        await self._phase("faustCeiling", lambda: self.faust_ceiling(d, workload))
        log("(2) scoring agent alone: 1 worker, sink off")
        w = d.worker("w1", LEADSCORE_SINK="off")
        first = await self.drain(d, [w], workload, version=1, profile=profile)
        w.stop()
        self.results["scoring"] = await self._median_with(first, "s", s.leads, s.events)
        log(f"    {self._rate_line(self.results['scoring'])}")
        return d, workload

    async def _median_with(
        self,
        first: dict[str, Any],
        name: str,
        leads: int,
        events: int,
        late_rate: float = 0.05,
        duplicate_rate: float = 0.03,
    ) -> dict[str, Any]:
        """`first` and `scoring_repeats - 1` more runs of the same workload on fresh deployments:
        the median run, with every run's rate. A run of 16,000 to 24,000 events lasts about a
        second, so one batch's timing moves a single run by a third."""
        runs = [first]
        for n in range(1, self.sizes.scoring_repeats):
            d = self.deployment(f"{name}{n}")
            await d.create()
            workload = build(
                d.project_id,
                leads=leads,
                events=events,
                late_rate=late_rate,
                duplicate_rate=duplicate_rate,
            )
            await produce_all(self.bootstrap, d.topic("events"), workload.records)
            w = d.worker("w1", LEADSCORE_SINK="off")
            runs.append(await self.drain(d, [w], workload, version=1))
            w.stop()
        return median_run(runs)

    async def memory_deployment(self) -> None:
        """(10) one worker (sink off) through `memory_events` events over `memory_leads` leads:
        its resident memory at the end and at its peak, and the rate on a long run."""
        s = self.sizes
        d = self.deployment("m")
        workload = await self.prepare(d, s.memory_leads, s.memory_events)
        self.results.setdefault("workloads", {})["memory"] = workload.describe()
        log(f"(10) memory: {workload.total:,} events over {workload.leads:,} leads, sink off")
        w = d.worker("w1", LEADSCORE_SINK="off")
        result = await self.drain(d, [w], workload, version=1)
        result["rssMbAtEnd"] = proc_rss_mb(w.pid)
        w.stop()
        self.results["memory"] = result
        log(f"    {self._rate_line(result)}; RSS at end {result['rssMbAtEnd']} MB")

    async def score_deployment(self) -> None:
        s = self.sizes
        d, workload = await self._scoring_alone()

        await self._phase("changelog", lambda: self.changelog(d, workload, 1, "changelog"))

        variants = [("twoWorkers", 2, "1")] if s.two_workers else []
        if s.two_workers and s.standby_variant:
            variants.append(("twoWorkersNoStandby", 4, "0"))
        for key, version, standby in variants:
            log(f"(6) two workers, sink off, app version {version}, standby replicas {standby}")
            pair = [
                d.worker(
                    f"{n}{version}",
                    LEADSCORE_SINK="off",
                    LEADSCORE_APP_VERSION=str(version),
                    LEADSCORE_STANDBY_REPLICAS=standby,
                )
                for n in ("a", "b")
            ]
            self.results[key] = await self.drain(d, pair, workload, version=version)
            self.results[key]["standbyReplicas"] = int(standby)
            stop_many(pair)
            log(f"    {self._rate_line(self.results[key])}")

        log("(7) replay: the first worker restarted with LEADSCORE_APP_VERSION=3 (profiled)")
        r = d.worker("replay", datadir_of="w1", LEADSCORE_SINK="off", LEADSCORE_APP_VERSION="3")
        self.results["replay"] = await self.drain(
            d, [r], workload, version=3,
            profile=(self.workdir / "profile-replay.txt", s.profile_seconds),
        )  # fmt: skip
        log(f"    {self._rate_line(self.results['replay'])}")

        r.stop()
        await self._phase("http", self.http_ingest)

    async def automation_deployments(self) -> None:
        """(9) automation: rules' cost to scoring, delivery rate, 202-to-receiver latency."""
        from bench.automation import run_automation

        await run_automation(self)

    async def inorder_deployment(self) -> None:
        s = self.sizes
        d = self.deployment("o")
        await d.create()
        workload = build(
            d.project_id, leads=s.leads, events=s.inorder_events, late_rate=0.0, duplicate_rate=0.0
        )
        await produce_all(self.bootstrap, d.topic("events"), workload.records)
        self.results.setdefault("workloads", {})["inorder"] = workload.describe()
        log("(2b) scoring agent alone on in-order events (no late events, no duplicates)")
        w = d.worker("w1", LEADSCORE_SINK="off")
        first = await self.drain(d, [w], workload, version=1)
        w.stop()
        self.results["scoringInOrder"] = await self._median_with(
            first, "o", s.leads, s.inorder_events, late_rate=0.0, duplicate_rate=0.0
        )
        log(f"    {self._rate_line(self.results['scoringInOrder'])}")
        await self.changelog(d, workload, 1, "changelogInOrder")

    async def deep_deployment(self) -> None:
        s = self.sizes
        d = self.deployment("d")
        workload = await self.prepare(d, s.deep_leads, s.deep_events)
        self.results.setdefault("workloads", {})["deep"] = workload.describe()
        log("(8) 10x events per lead: 1 worker, sink off")
        w = d.worker("w1", LEADSCORE_SINK="off")
        self.results["deepScoring"] = await self.drain(d, [w], workload, version=1)
        w.stop()
        log(f"    {self._rate_line(self.results['deepScoring'])}")
        await self.changelog(d, workload, 1, "changelogDeep")

    async def mat_deployment(self) -> None:
        s = self.sizes
        d = self.deployment("m")
        workload = await self.prepare(d, s.mat_leads, s.mat_events)
        self.results.setdefault("workloads", {})["mat"] = workload.describe()
        log("(3) scored and materialized: 1 worker, sink on (profiled)")
        w = d.worker("w1", LEADSCORE_SINK="on")
        profile_out = self.workdir / "profile-materialize.txt"
        self.results["materialize"] = await self.drain(
            d, [w], workload, version=1, mongo=True, profile=(profile_out, s.profile_seconds)
        )
        m = self.results["materialize"]
        log(
            f"    {m['eventsPerSec']:,.0f} events/s scored and in MongoDB "
            f"(scoring part done after {m.get('scoredAfterSeconds')} s)"
        )
        await self._phase("mongoRaw", lambda: self.mongo_raw(d))
        await self._phase("latency", lambda: self.latency(d, w))
        w.stop()
        if s.sink_process:
            await self._phase("sinkProcess", self.sink_process_deployment)

    async def sink_process_deployment(self) -> None:
        """(3b): the workload of (3) on a worker without sink plus a `leadscore sink` process."""
        s = self.sizes
        d = self.deployment("n")
        workload = await self.prepare(d, s.mat_leads, s.mat_events)
        log("(3b) scored and materialized: worker with LEADSCORE_SINK=off + a sink process")
        w = d.worker("w1", LEADSCORE_SINK="off")
        sink = d.worker("sink", LEADSCORE_ROLE="sink")
        m = await self.drain(d, [w, sink], workload, version=1, mongo=True)
        self.results["materializeSinkProcess"] = m
        log(
            f"    {m['eventsPerSec']:,.0f} events/s scored and in MongoDB "
            f"(scoring part done after {m.get('scoredAfterSeconds')} s)"
        )
        # (5b) the latency of (5) on this pair: the worker's consumer shares no agent with the
        # sink, whose MongoDB-bound backlog can no longer hold back the scoring stream
        await self.latency(d, w, result="latencySinkProcess", label="(5b)")
        d.stop_all()

    async def sink_alone_deployment(self) -> None:
        """(3c): the sink alone against the server's own rate for the same writes, in one run.

        A worker with the sink off scores the `mat` workload and stops; then a `leadscore sink`
        process materializes the pre-filled lead-changes topic with nothing else running, timed
        from its first history row to MongoDB holding everything. `bench/mongoref.py` writes
        all the same LeadChanges, cut and coalesced the same way, as plain `$set` upserts and as
        the store's exact writes, each right before and right after the sink (the references are
        their means: the machine is shared).
        """
        s = self.sizes
        d = self.deployment("k")
        workload = await self.prepare(d, s.mat_leads, s.mat_events)
        self.results.setdefault("workloads", {})["sink"] = workload.describe()
        log("(3c) the lead-changes of the mat workload, scored by a worker with the sink off")
        w = d.worker("w1", LEADSCORE_SINK="off")
        await self.drain(d, [w], workload, version=1)
        w.stop()
        changes: list[dict[str, Any]] = []
        await scan_topic(
            self.bootstrap, d.topic("lead-changes"), d.partitions,
            lambda _p, r: changes.append(orjson.loads(r.value)),
        )  # fmt: skip
        refs: list[dict[str, Any]] = []

        async def reference(variant: str) -> dict[str, Any]:
            cpu = self.cpu()
            name = f"{d.prefix}_raw_{variant}{len(refs)}"
            r = await measure(self.mongo_url, name, changes, SINK_BATCH, variant)
            r["cpu"] = cpu.read()
            refs.append(r)
            log(f"    server raw, {variant}: {r['eventsPerSec']:,.0f} changes/s")
            return r

        from bench.mongoref import measure

        await reference("plain")
        await reference("sink")
        log(f"(3c) a `leadscore sink` process alone on {len(changes)} LeadChanges")
        sink = d.worker("sink", LEADSCORE_ROLE="sink")
        sink.start()
        from motor.motor_asyncio import AsyncIOMotorClient

        client: Any = AsyncIOMotorClient(self.mongo_url, tz_aware=True)
        db = client[d.prefix]
        samples: list[tuple[float, int]] = []
        first = done = None
        cpu: CpuClock | None = None
        run: ProfileRun | None = None
        profile_seconds = min(s.profile_seconds, 5.0)  # the sink is done in ~10 s
        profile: dict[str, Any] | None = None
        deadline = time.monotonic() + 120 + len(changes) / 50
        try:
            while done is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"sink not done: {samples[-1:]} of {workload.distinct_events}"
                    )
                sink.check()
                rows = await db.score_history.estimated_document_count()
                now = time.monotonic()
                samples.append((now, rows))
                if rows and first is None:
                    first, cpu = now, self.cpu([sink])
                    out = self.workdir / "profile-sink.txt"
                    run = ProfileRun(sink.pid, profile_seconds, out)
                if rows >= workload.distinct_events and not await self._verify_mongo(db, workload):
                    done = time.monotonic()
                await asyncio.sleep(0.1)
            if run is not None:
                profile = await asyncio.to_thread(run.finish, profile_seconds + 60)
                profile["seconds"] = profile_seconds
        finally:
            client.close()
            if run is not None:
                run.kill()
        assert first is not None and cpu is not None
        cpu_used = cpu.read()
        batches = await _sink_batches(sink.url)
        sink.stop()
        await reference("plain")
        await reference("sink")
        seconds = max(done - first, POLL)
        steady = steady_rate(samples, workload.distinct_events)
        per_row = len(changes) / workload.distinct_events
        rate = len(changes) / seconds

        def mean(variant: str) -> float:
            rates = [r["eventsPerSec"] for r in refs if r["variant"] == variant]
            return sum(rates) / len(rates)

        raw, exact = mean("plain"), mean("sink")
        self.results["sinkAlone"] = {
            "changes": len(changes),
            "historyRows": workload.distinct_events,
            "leads": workload.leads,
            "seconds": round(seconds, 2),
            "changesPerSec": round(rate, 1),
            "steadyChangesPerSec": round(steady * per_row, 1) if steady else None,
            "cpuCores": cpu_used,
            "serverRawChangesPerSec": round(raw, 1),
            "ratio": round(rate / raw, 3),
            "steadyRatio": round(steady * per_row / raw, 3) if steady else None,
            "exactPlanChangesPerSec": round(exact, 1),
            "exactRatio": round(rate / exact, 3),
            "sinkBatches": batches,  # from the sink's metrics: batches, seconds in MongoDB writes
            "references": refs,
            "workerErrors": _log_errors([sink]),
            "profile": profile,
        }
        log(
            f"    sink {rate:,.0f} changes/s, server raw {raw:,.0f}/s: sink ÷ server raw = "
            f"{rate / raw:.3f} (steady {self.results['sinkAlone']['steadyRatio']})"
        )

    # -- measurements --------------------------------------------------------------------------
    async def passthrough(self, d: Deployment, workload: WireWorkload) -> None:
        log("(1) physical reference: raw aiokafka pass-through")
        dest = d.topic("bench-passthrough")
        await create_topic(self.bootstrap, dest, d.partitions)
        runs = []
        modes = ["raw"] * self.sizes.passthrough_repeats + ["json"]
        for n, mode in enumerate(modes):
            argv = [
                sys.executable, "-m", "bench.passthrough", "--bootstrap", self.bootstrap,
                "--source", d.topic("events"), "--dest", dest, "--group", f"{d.prefix}-pt{n}",
                "--expect", str(workload.total), "--mode", mode, "--timeout", "120",
            ]  # fmt: skip
            cpu = self.cpu()
            out = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=180, cwd=ROOT
            )
            if out.returncode != 0:
                raise RuntimeError(f"pass-through failed: {out.stderr[-800:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["cpu"] = cpu.read()
            runs.append(result)
        raw = sorted(r["eventsPerSec"] for r in runs if r["mode"] == "raw")
        self.results["passthrough"] = {
            "eventsPerSec": raw[len(raw) // 2] if len(raw) % 2 else sum(raw[-2:]) / 2,
            "runs": runs,
            "jsonEventsPerSec": next(r["eventsPerSec"] for r in runs if r["mode"] == "json"),
        }
        log(f"    raw pass-through: {raw} events/s")

    async def faust_ceiling(self, d: Deployment, workload: WireWorkload) -> None:
        """(1b) an agent that does nothing, on the pre-filled events topic (bench/faust_ceiling)."""
        log("(1b) Faust's ceiling: an agent that takes batches and does nothing")
        runs = []
        for n in range(2):
            env = d.env() | {
                "BENCH_TOPIC": d.topic("events"),
                "BENCH_COUNT": str(workload.total),
                "BENCH_APP_ID": f"{d.prefix}-ceiling{n}",
                "BENCH_DATADIR": str(self.workdir / f"ceiling{n}"),
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.faust_ceiling", "worker", "-l", "warn",
                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 180)
            finally:
                if proc.returncode is None:
                    proc.kill()
            found = [line for line in out.decode().splitlines() if line.startswith("{")]
            if not found:
                raise RuntimeError("the Faust ceiling run printed no result")
            result = json.loads(found[-1])
            runs.append(round(result["records"] / max(result["seconds"], 1e-3), 1))
        self.results["faustCeiling"] = {"runs": runs, "eventsPerSec": max(runs)}
        log(f"    {max(runs):,.0f} records/s (runs {runs})")

    async def drain(
        self,
        d: Deployment,
        workers: list[WorkerProcess],
        workload: WireWorkload,
        *,
        version: int,
        mongo: bool = False,
        profile: tuple[Path, float] | None = None,
    ) -> dict[str, Any]:
        """Start `workers` on the pre-filled topic; time until every event is scored (the
        leads' latest LeadChanges count every distinct event; consumer-group lag 0 reported)
        and, with `mongo`, in MongoDB."""
        changes_topic = d.topic("lead-changes")
        dead_topic = d.topic("dead-letter")
        counter = ScoredCounter(self.bootstrap, changes_topic, d.partitions)
        await counter.start()
        dead_baseline = await self.probe.total(dead_topic, d.partitions)
        expect = workload.distinct_events
        group = d.group(version)
        for w in workers:
            w.start()
        started = min(w.started_at for w in workers)
        # poll from the start: a worker may score everything before its peer is healthy
        health = asyncio.ensure_future(asyncio.gather(*(w.wait_healthy() for w in workers)))
        db = None
        if mongo:
            from motor.motor_asyncio import AsyncIOMotorClient

            client: Any = AsyncIOMotorClient(self.mongo_url, tz_aware=True)
            db = client[d.prefix]
        timeout = 60 + workload.total / (50 if mongo else 200)
        samples: list[tuple[float, int]] = []
        mongo_samples: list[tuple[float, int]] = []
        first = scored = lag0 = in_mongo = None
        cpu_scoring: dict[str, float] = {}
        cpu: CpuClock | None = None
        run: ProfileRun | None = None
        profile_result: dict[str, Any] | None = None
        verify_failures = 0
        progressed = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - started > timeout:
                    raise TimeoutError(
                        f"not done in {timeout:.0f} s: {samples[-1:]} changes, "
                        f"{mongo_samples[-1:]} history rows of {expect}"
                    )
                for w in workers:
                    w.check()
                if health.done():
                    health.result()  # raises if a worker never became healthy
                count = await counter.poll()
                now = time.monotonic()
                if samples and count > samples[-1][1]:
                    progressed = now
                samples.append((now, count))
                if now - progressed > 45 and count < expect:
                    dead = await self.probe.total(dead_topic, d.partitions) - dead_baseline
                    raise RuntimeError(
                        f"no progress for 45 s at {count} of {expect} events, {dead} records "
                        f"dead-lettered; worker errors: {_log_errors(workers)}"
                    )
                if count > 0 and first is None:
                    first = now
                    cpu = self.cpu(workers)
                    if profile is not None:
                        run = ProfileRun(workers[0].pid, profile[1], profile[0])
                if count >= expect and scored is None:
                    scored = now
                    assert cpu is not None
                    cpu_scoring = cpu.read()
                if (
                    scored is not None
                    and lag0 is None
                    and await self.probe.lag(group, d.topic("events"), d.partitions) == 0
                ):
                    lag0 = time.monotonic()
                if db is not None and first is not None and in_mongo is None:
                    rows = await db.score_history.estimated_document_count()
                    mongo_samples.append((time.monotonic(), rows))
                    if rows >= expect:
                        bad = await self._verify_mongo(db, workload)
                        if not bad:
                            in_mongo = time.monotonic()
                        else:
                            verify_failures += 1
                done = scored is not None and (
                    lag0 is not None or now - scored > self.sizes.lag_wait
                )
                if done and (db is None or in_mongo is not None):
                    break
                await asyncio.sleep(POLL if db is None else 0.5)
            cpu_total = cpu.read() if cpu is not None else {}
            if run is not None:
                profile_result = await asyncio.to_thread(run.finish, profile[1] + 60)  # type: ignore[index]
            healthy = await health
        finally:
            await counter.stop()
            if not health.done():
                health.cancel()
            if run is not None:
                run.kill()
            if db is not None:
                client.close()
        assert first is not None and scored is not None
        end = in_mongo if mongo else scored
        assert end is not None
        seconds = max(end - first, POLL)  # all within one poll: at most one poll interval
        total = workload.total
        per_distinct = total / expect
        steady = steady_rate(mongo_samples if mongo else samples, expect)
        out: dict[str, Any] = {
            "workers": len(workers),
            "appVersion": version,
            "records": total,
            "distinctEvents": expect,
            "healthySeconds": [round(h, 2) for h in healthy],
            "firstChangeAfterSeconds": round(first - started, 2),
            "seconds": round(seconds, 2),
            "eventsPerSec": round(total / seconds, 1),
            "steadyEventsPerSec": round(steady * per_distinct, 1) if steady else None,
            "fromStartEventsPerSec": round(total / (end - started), 1),
            "lagZeroAfterSeconds": round(lag0 - first, 2) if lag0 else None,
            "cpuCores": cpu_total,
            "peakRssMb": {w.name: proc_peak_rss_mb(w.pid) for w in workers},
            "deadLettered": await self.probe.total(dead_topic, d.partitions) - dead_baseline,
            "series": _series(samples, mongo_samples, started),
            "workerErrors": _log_errors(workers),
        }
        if mongo:
            out["scoredAfterSeconds"] = round(scored - first, 2)
            out["scoringEventsPerSec"] = round(total / max(scored - first, POLL), 1)
            out["cpuCoresWhileScoring"] = cpu_scoring
            out["verifyRetries"] = verify_failures
            out["historyRows"] = expect
            out["leads"] = workload.leads
        if profile_result is not None:
            out["profile"] = profile_result
            out["profile"]["seconds"] = profile[1]  # type: ignore[index]
            out["profile"]["rawFile"] = str(profile[0].relative_to(ROOT))  # type: ignore[index]
        return out

    async def _verify_mongo(self, db: Any, workload: WireWorkload) -> list[str]:
        """Every lead with the right eventCount and every history row."""
        rows = await db.score_history.count_documents({"projectId": workload.project_id})
        if rows != workload.distinct_events:
            return [f"{rows} history rows, want {workload.distinct_events}"]
        docs = await db.leads.find(
            {"projectId": workload.project_id}, {"leadId": 1, "eventCount": 1, "_id": 0}
        ).to_list(None)
        got = {doc["leadId"]: doc.get("eventCount") for doc in docs}
        bad = [lead for lead, n in workload.per_lead.items() if got.get(lead) != n]
        return [f"{len(bad)} leads differ, e.g. {bad[:3]}"] if bad else []

    async def changelog(
        self, d: Deployment, workload: WireWorkload, version: int, key: str
    ) -> None:
        from bench.changelog import measure

        log(f"(8) changelog bytes of {d.group(version)}")
        r = await measure(
            self.bootstrap, d.prefix, d.group(version), d.partitions, workload,
            self.kafka_log_dirs,
        )  # fmt: skip
        self.results[key] = r
        log(f"    {r['bytesPerEvent']:.0f} B/event in {r['recordsPerEvent']:.2f} records/event")

    async def mongo_raw(self, d: Deployment) -> None:
        from bench.mongoref import measure

        log("(3) MongoDB-wire server's own bulk-write rate on the sink's LeadChanges")
        changes: list[dict[str, Any]] = []

        def keep(_p: int, r: Any) -> None:
            changes.append(orjson.loads(r.value))

        await scan_topic(self.bootstrap, d.topic("lead-changes"), d.partitions, keep)
        subset = changes[: self.sizes.raw_changes]  # partitions interleaved as fetched
        batch = SINK_BATCH
        out: dict[str, Any] = {}
        for variant in ("plain", "sink"):
            cpu = self.cpu()
            r = await measure(self.mongo_url, f"{d.prefix}_raw_{variant}", subset, batch, variant)
            r["cpu"] = cpu.read()
            out[variant] = r
            log(f"    {variant}: {r['eventsPerSec']:,.0f} events/s ({r['opsPerSec']:,.0f} ops/s)")
        self.results["mongoRaw"] = out

    async def http_ingest(self) -> None:
        """Each run on a fresh deployment and worker (sink off), so no run starts with the
        scoring backlog of the one before; the worker scores what it ingests meanwhile."""
        from bench.loadgen import _event

        s = self.sizes
        log("(4) HTTP ingest, each run on a fresh worker (which also scores what it ingests)")
        wrk = await asyncio.to_thread(ensure_wrk)
        rng = random.Random(5)
        batch_events = [_event(rng, f"wrk-b{i % 700}") for i in range(s.batch_size)]
        out: dict[str, Any] = {"generator": "wrk" if wrk else "python-aiohttp"}

        async def one(
            n: int, mode: str, concurrency: int, profile: bool, ingest_process: bool = False
        ) -> dict[str, Any]:
            d = self.deployment(f"h{n}")
            await d.create()
            w = d.worker("w1", LEADSCORE_SINK="off")
            w.start()
            # with `ingest_process`, requests go to a `leadscore ingest` process of their own
            target = d.worker("i1", LEADSCORE_ROLE="ingest") if ingest_process else w
            if ingest_process:
                target.start()
            run: ProfileRun | None = None
            try:
                await w.wait_healthy()
                await target.wait_healthy()
                cpu = self.cpu([w, target] if ingest_process else [w])
                if profile:  # the load generator's first second (connections) is left out
                    seconds = max(1.0, s.http_seconds - 2)
                    path = self.workdir / f"profile-http-{mode}.txt"
                    run = ProfileRun(w.pid, seconds, path, start_after=1.0)
                if wrk:
                    r = await asyncio.to_thread(
                        run_wrk,
                        wrk,
                        mode,
                        target.url,
                        d.api_key,
                        duration=s.http_seconds,
                        connections=concurrency,
                        batch_events=batch_events if mode == "batch" else None,
                    )
                else:
                    r = await self._python_load(
                        {
                            "mode": mode,
                            "url": target.url,
                            "apiKey": d.api_key,
                            "duration": s.http_seconds,
                            "concurrency": concurrency,
                            "batchSize": s.batch_size,
                        }
                    )
                r["cpu"] = cpu.read()
                r["scoredDuringRun"] = await self.probe.total(d.topic("lead-changes"), 8)
                r["ingestProcess"] = ingest_process
                w.check()
                target.check()
                if run is not None:
                    r["profile"] = await asyncio.to_thread(run.finish, 60)
                    r["profile"].update(seconds=seconds, rawFile=str(path.relative_to(ROOT)))
            finally:
                if run is not None:
                    run.kill()
                d.stop_all()
            via = " via an ingest process" if ingest_process else ""
            log(
                f"    {mode}{via} c={concurrency}: {r['eventsPerSec']:,.0f} events/s, "
                f"{r['requestsPerSec']:,.0f} req/s, p99 {r['latency'].get('p99Ms')} ms"
            )
            return r

        last = len(s.single_concurrency)
        out["single"] = [
            await one(i, "single", c, profile=i == last)
            for i, c in enumerate(s.single_concurrency, start=1)
        ]
        out["batch"] = await one(0, "batch", s.batch_concurrency, profile=True)
        if s.ingest_process:  # (4b) the same load on a `leadscore ingest` next to the worker
            out["singleViaIngest"] = await one(
                90, "single", max(s.single_concurrency), profile=False, ingest_process=True
            )
            out["batchViaIngest"] = await one(
                91, "batch", s.batch_concurrency, profile=False, ingest_process=True
            )
        self.results["http"] = out

    async def _python_load(self, cfg: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.loadgen", json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr[-800:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    async def latency(
        self, d: Deployment, w: WorkerProcess, result: str = "latency", label: str = "(5)"
    ) -> None:
        s = self.sizes
        runs = []
        for rate, seconds in s.latency:
            log(f"{label} end-to-end latency at {rate} events/s for {seconds:.0f} s")
            cpu = self.cpu([w])
            run = None
            if rate >= 1_000 and result == "latency":  # where the worker's time goes at 1,000/s
                out = self.workdir / f"profile-latency{rate}.txt"
                run = ProfileRun(w.pid, seconds - 2, out, start_after=1.0)
            r = await self._python_load(
                {
                    "mode": "latency",
                    "url": w.url,
                    "apiKey": d.api_key,
                    "rate": rate,
                    "duration": seconds,
                    "probeEvery": max(1, rate // 20),
                    "settle": s.latency_settle,
                    # its `$in` reads run on the MongoDB-wire server, which shares the two
                    # cores with the worker under test: every 100 ms, not 20 (a resolution
                    # of 0.1 s on figures near 1 s)
                    "mongoPollMs": 100,
                    "mongoUrl": self.mongo_url,
                    "mongoDb": d.prefix,
                    "projectId": d.project_id,
                    "leadPrefix": f"lat{rate}",
                },
                timeout=seconds + s.latency_settle + 120,
            )
            r["cpu"] = cpu.read()
            if run is not None:
                r["profile"] = await asyncio.to_thread(run.finish, seconds + 60)
                r["profile"]["seconds"] = seconds - 2
            runs.append(r)
            log(
                f"    achieved {r['achievedRate']}/s; by key p50/p99 "
                f"{r['visibleByKey'].get('p50Ms')}/{r['visibleByKey'].get('p99Ms')} ms; "
                f"MongoDB p50/p99 {r['inMongo'].get('p50Ms')}/{r['inMongo'].get('p99Ms')} ms"
            )
            w.check()
            await asyncio.sleep(2)
        self.results[result] = runs

    @staticmethod
    def _rate_line(r: dict[str, Any]) -> str:
        return (
            f"{r['eventsPerSec']:,.0f} events/s (steady {r.get('steadyEventsPerSec')}, from start "
            f"{r['fromStartEventsPerSec']:,.0f}); lag 0 after {r.get('lagZeroAfterSeconds')} s"
        )


async def _sink_batches(url: str) -> dict[str, float]:
    """The sink's batches (count) and its seconds in MongoDB writes, from its `GET /metrics`."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"{url}/metrics") as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError:
        return {}
    names = {
        "leadscore_sink_batch_seconds_sum": "writeSeconds",
        "leadscore_sink_batch_size_count": "batches",
    }
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            out[names[name]] = round(float(value), 2)
    return out


def _series(
    samples: list[tuple[float, int]], mongo: list[tuple[float, int]], t0: float, points: int = 60
) -> dict[str, list[list[float]]]:
    """(seconds since the workers started, count) of LeadChanges and MongoDB rows, thinned."""

    def thin(xs: list[tuple[float, int]]) -> list[list[float]]:
        step = max(1, len(xs) // points)
        kept = xs[::step] + ([xs[-1]] if xs and (len(xs) - 1) % step else [])
        return [[round(t - t0, 2), c] for t, c in kept]

    out = {"leadChanges": thin(samples)}
    if mongo:
        out["historyRows"] = thin(mongo)
    return out


def _log_errors(workers: list[WorkerProcess]) -> dict[str, Any]:
    """How many ERROR lines each worker logged, the last line of the first traceback, and the
    most frequent WARNING (e.g. Faust's "producer buffer full", its producer backpressure)."""
    out: dict[str, Any] = {}
    for w in workers:
        try:
            lines = w.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        warnings = Counter(
            re.sub(r"\d+", "N", line.split("[WARNING]", 1)[1].strip())[:80]
            for line in lines
            if "[WARNING]" in line
        )
        if warnings:
            out.setdefault(w.name, {})["warnings"] = dict(warnings.most_common(3))
        errors = [i for i, line in enumerate(lines) if "[ERROR]" in line]
        if not errors:
            continue
        first = next(
            (
                line
                for line in lines[errors[0] + 1 : errors[0] + 60]
                if re.match(r"^\w+(Error|Exception)", line)
            ),
            lines[errors[0]],
        )
        out.setdefault(w.name, {}).update(errorLines=len(errors), first=first[:300])
    return out


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
