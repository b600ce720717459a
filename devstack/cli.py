"""``python -m devstack up|down|status``: the local stack from a shell or the Makefile."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from devstack.errors import DevstackError
from devstack.layout import Layout
from devstack.stack import (
    DEFAULT_TIMEOUT,
    KAFKA_ENV,
    MONGO_ENV,
    ServiceStatus,
    StackInfo,
    ensure_up,
    shutdown,
    status,
)

__all__ = ["EXIT_DOWN", "export_lines", "main", "status_table"]

#: `status` exit code when any service is not up (0 when all are).
EXIT_DOWN = 3
EXIT_ERROR = 1


def export_lines(info: StackInfo) -> list[str]:
    """Shell lines for ``eval "$(python -m devstack up | grep ^export)"``."""
    return [
        f"export {KAFKA_ENV}={shlex.quote(info.bootstrap_servers)}",
        f"export {MONGO_ENV}={shlex.quote(info.mongo_url)}",
    ]


def status_table(rows: Sequence[ServiceStatus]) -> list[str]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    table = [("SERVICE", "PID", "ADDRESS", "ALIVE", "ANSWERING")]
    for row in rows:
        table.append(
            (
                row.name,
                "-" if row.pid is None else str(row.pid),
                row.address,
                "external" if row.external else yes(row.alive),
                yes(row.answering),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The local Kafka + MongoDB-wire stack, without Docker, under .local/.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or check) Kafka and the MongoDB-wire server")
    up.add_argument(
        "--brokers", type=int, default=None, help="Kafka nodes (default: $BROKERS or 1)"
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the services to answer (default: %(default)s)",
    )
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help=f"show the services; exit 0 if all up, {EXIT_DOWN} if not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "up" and args.brokers is None:
        raw = os.environ.get("BROKERS", "1")
        if not raw.strip().isdigit():
            parser.error(f"BROKERS must be a whole number, got {raw!r}")
        args.brokers = int(raw)
    if args.command == "up" and args.brokers < 1:
        parser.error(f"the broker count must be at least 1, got {args.brokers}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("devstack: %(message)s"))
    logger = logging.getLogger("devstack")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        if args.command == "up":
            info = ensure_up(args.brokers, timeout=args.timeout)
            if not info.started:
                logger.info("already up; nothing started")
            print("\n".join(export_lines(info)))
            return 0
        if args.command == "down":
            if not shutdown():
                logger.info("nothing of ours was running")
            return 0
        rows = status()
        if not rows:
            print(f"stack is down (no {Layout.from_env().state_file})")
            return EXIT_DOWN
        print("\n".join(status_table(rows)))
        return 0 if all(row.up for row in rows) else EXIT_DOWN
    except DevstackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
