"""`python -m bench [--quick] [--only automation|sink|scoring|memory|latency] [--keep] [--no-doc]
[--doc] [--render JSON]`: docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.machine import describe, git_commit
from bench.suite import DEFAULT, QUICK, Suite, log, sizes_dict


def _kafka_log_dirs(pids: list[int]) -> list[Path]:
    """log.dirs of local brokers, from the server.properties on their command line."""
    dirs: list[Path] = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            props = Path(next(a for a in reversed(argv) if a.endswith(b".properties")).decode())
            for line in props.read_text().splitlines():
                if line.startswith("log.dirs="):
                    dirs += [Path(p) for p in line.split("=", 1)[1].split(",")]
        except (OSError, StopIteration):
            continue
    return dirs


def _services() -> dict[str, int]:
    """Pids of the local stack's processes now (none for external services)."""
    import devstack

    try:
        rows = devstack.status()
    except Exception:
        return {}
    out = {}
    for row in rows:
        if row.pid and not row.external and row.alive:
            out[row.name.replace("kafka", "broker")] = row.pid
    return out


def _mongo_server(url: str) -> str:
    from pymongo import MongoClient

    try:
        client: MongoClient[Any] = MongoClient(url, serverSelectionTimeoutMS=5_000)
        info = client.admin.command("buildInfo")
        client.close()
        return f"`{info.get('version', '?')}`" + (
            " (SecantusDB, Python `secantusd-py`)" if "secantus" in str(info).lower() else ""
        )
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument(
        "--only",
        choices=["automation", "sink", "scoring", "memory", "latency"],
        help="run one group of rows only (never rewrites docs/PERFORMANCE.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep topics, databases, state")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/PERFORMANCE.md")
    parser.add_argument(
        "--doc", action="store_true", help="rewrite docs/PERFORMANCE.md also in --quick mode"
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="only rewrite docs/PERFORMANCE.md from a results file (no measurement)",
    )
    args = parser.parse_args()
    if args.render:
        import json

        saved = json.loads(Path(args.render).read_text())
        print(report.update_doc(saved).relative_to(report.ROOT))
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka", "pymongo", "motor"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    import devstack

    sizes = QUICK if args.quick else DEFAULT
    started_wall = datetime.now(UTC)
    t0 = time.monotonic()
    machine = describe()
    git = git_commit()
    log(f"mode {sizes.name}; bringing the local stack up (devstack.ensure_up)")
    info = devstack.ensure_up()
    exit_code = 0
    try:
        broker_pids = [p for n, p in _services().items() if n.startswith("broker")]
        suite = Suite(
            sizes,
            info.bootstrap_servers,
            info.mongo_url,
            _services,
            _kafka_log_dirs(broker_pids),
            only=args.only,
        )
        log(f"run {suite.run_id}: Kafka {info.bootstrap_servers}, MongoDB {info.mongo_url}")
        try:
            asyncio.run(suite.run())
        finally:
            asyncio.run(suite.cleanup(keep=args.keep))
        out: dict[str, Any] = {
            "schema": 1,
            "runId": suite.run_id,
            "mode": sizes.name,
            "only": args.only,
            "startedAt": started_wall.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "durationSeconds": round(time.monotonic() - t0, 1),
            "sizes": sizes_dict(sizes),
            "machine": machine,
            "git": git,
            "stack": {
                "bootstrap": info.bootstrap_servers,
                "mongoUrl": info.mongo_url,
                "mongoServer": _mongo_server(info.mongo_url),
                "startedByBench": info.started,
            },
            "results": suite.results,
            "errors": suite.errors,
        }
        report.write_json(out)
        if not args.no_doc and not args.only and (not args.quick or args.doc):
            log(f"updated {report.update_doc(out).relative_to(report.ROOT)}")
        print(report.render(out))
        log(f"results: {out['jsonFile']} ({out['durationSeconds']:.0f} s)")
        if suite.errors:
            exit_code = 1
    finally:
        if info.started and not os.environ.get("LEADSCORE_KEEP_STACK"):
            log("stopping the stack this run started")
            devstack.shutdown()
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
