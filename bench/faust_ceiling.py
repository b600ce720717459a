"""(1b) Faust's own ceiling: an agent that does nothing with the records it is handed.

`python -m bench.faust_ceiling worker` in a subprocess, with BENCH_TOPIC, BENCH_COUNT and
BENCH_APP_ID in the environment: a Faust app with the worker's consumer settings
(`app/faust_app.py`: 2,000 records per poll, the same patches) takes the pre-filled topic in
batches with `take_events` — as the scoring agent does — and does nothing else. The time from
its first batch to the last record is the most any Faust agent can do per worker on this
machine: what the scoring path pays for Faust's consumer → conductor → channel → stream → ack
machinery before it does any work. Prints one JSON line and exits.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust
import orjson

from app import faust_patches

faust_patches.apply()

TOPIC = os.environ.get("BENCH_TOPIC", "bench-ceiling")
COUNT = int(os.environ.get("BENCH_COUNT", "1"))

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-ceiling"),
    broker=f"kafka://{os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:9092')}",
    store="memory://",
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    broker_max_poll_records=2_000,
    stream_buffer_maxsize=16_384,
    broker_commit_every=10_000,
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-ceiling"),
    topic_allow_declare=False,
)
source = app.topic(
    TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
_seen: dict[str, Any] = {"n": 0, "first": None, "firstBatch": 0}


@app.agent(source)
async def nothing(stream: Any) -> None:
    async for events in stream.take_events(2_000, 0.05):
        if _seen["first"] is None:  # timed from the first batch handed over, which is not
            _seen["first"] = time.perf_counter()  # counted
            _seen["firstBatch"] = len(events)
        _seen["n"] += len(events)
        if _seen["n"] >= COUNT:
            seconds = time.perf_counter() - _seen["first"]
            timed = _seen["n"] - _seen["firstBatch"]
            line = orjson.dumps({"records": timed, "seconds": seconds})
            sys.__stdout__.write(line.decode() + "\n")  # type: ignore[union-attr]
            sys.__stdout__.flush()  # type: ignore[union-attr]
            os._exit(0)


if __name__ == "__main__":
    app.main()
