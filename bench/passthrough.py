"""The physical reference: a raw aiokafka pass-through in its own process.

Consumes the events topic with a consumer group and produces one record per event to another
topic, committing the group's offsets after the produced records are acknowledged — with the
worker's batching settings (app/faust_app.py: max_poll_records 2,000, commit every 10,000 records
or 2.8 s, fetches held at most 100 ms, producer acks=all, linger 5 ms, 256 KiB batches).
(With aiokafka's 500 ms fetch wait, one run in three or four stalled at the end of a partition
and read about half the rate: the reference was bimodal, ~36,000 or ~75,000/s, until session 8;
app/faust_patches.py patch 8.) `--mode json` also parses and
re-serializes each value (orjson), the least any scoring consumer must do.

    python -m bench.passthrough --bootstrap H:P --source T --dest T2 --group G --expect N
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

COMMIT_EVERY = 10_000
COMMIT_INTERVAL = 2.8


async def run(args: argparse.Namespace) -> dict[str, object]:
    consumer = AIOKafkaConsumer(
        args.source,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2_000,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    await consumer.start()
    count = 0
    first: float | None = None
    deadline = time.monotonic() + args.timeout
    commits = 0
    try:
        pending: list[asyncio.Future[object]] = []
        uncommitted = 0
        last_commit = time.monotonic()
        transform = args.mode == "json"
        while count < args.expect:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pass-through saw {count} of {args.expect} records")
            batches = await consumer.getmany(timeout_ms=200, max_records=2_000)
            if batches and first is None:
                first = time.monotonic()
            for records in batches.values():
                for r in records:
                    value = orjson.dumps(orjson.loads(r.value)) if transform else r.value
                    pending.append(await producer.send(args.dest, key=r.key, value=value))
                count += len(records)
                uncommitted += len(records)
            if uncommitted >= COMMIT_EVERY or time.monotonic() - last_commit >= COMMIT_INTERVAL:
                await asyncio.gather(*pending)
                pending.clear()
                await consumer.commit()
                commits += 1
                uncommitted = 0
                last_commit = time.monotonic()
        await asyncio.gather(*pending)
        await consumer.commit()
        commits += 1
        end = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert first is not None
    seconds = end - first
    return {
        "mode": args.mode,
        "records": count,
        "seconds": round(seconds, 3),
        "eventsPerSec": round(count / seconds, 1),
        "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 2),
        "commits": commits,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--mode", choices=("raw", "json"), default="raw")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--fetch-max-wait-ms", type=int, default=100)  # the worker's (patch 8)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
