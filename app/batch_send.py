"""Produce a request's records as one aiokafka batch per partition, and wait for the broker.

Ingest used to send each event through Faust's `Topic.send` (a `FutureMessage`, serializer
lookups, callbacks, then aiokafka's own per-message path): that was ≈ 40 % of the worker's CPU
during batch ingest (docs/PERFORMANCE.md). Appending to aiokafka's `BatchBuilder` costs a
fraction of it; the producer's settings (`acks=all`, retries) still apply to the batch. A few
records for a partition go through aiokafka's `send` instead, into the batch already open.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["send_in_batches"]

_OWN_BATCH_FROM = 16  # records for one partition in one request


async def send_in_batches(
    producer: Any, topic: str, records: Iterable[tuple[int, bytes, bytes | None]]
) -> dict[int, int]:
    """Send (partition, key, value) records, in order per partition (a None value is a
    tombstone); return once all are acked, with an offset per partition at or below the last
    record written there (a batch reports its first record's offset)."""
    by_partition: defaultdict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
    for partition, key, value in records:
        by_partition[partition].append((key, value))
    deliveries = []
    for partition, items in by_partition.items():
        if len(items) < _OWN_BATCH_FROM:
            # a batch of its own would travel alone: the sender takes one batch per partition
            # per request, so concurrent single-event requests join the open batch instead
            for key, value in items:
                deliveries.append(await producer.send(topic, value, key=key, partition=partition))
            continue
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    size = len(value or b"")
                    raise ValueError(f"a record of {size} bytes exceeds a producer batch")
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    offsets: dict[int, int] = {}
    for sent in await asyncio.gather(*deliveries):
        if offsets.get(sent.partition, -1) < sent.offset:
            offsets[sent.partition] = sent.offset
    return offsets
