"""The sink agent: lead-changes → MongoDB in bulk (through `store`), retried until it succeeds.

Faust acks an event when the agent raises, so a failed write must never escape: a batch that
meets a temporary fault is retried with backoff (never skipped), and `concurrency=1` keeps offsets
from being committed past a batch still in flight. Writes are idempotent, so a retry after a
partial success is safe. A change MongoDB refuses for good (a value it cannot store) is
dead-lettered alone, so it never stops the sink for other leads and projects (ADR 0015).
The agent only decodes and filters records; planning and writing are the store's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import msgspec
import orjson
from faust.types import StreamT

import store
from app import metrics
from app.faults import dead_letter, dead_letter_value, retry_temporary
from app.records import VERSION_EPOCH_BITS
from app.settings import settings
from app.topology import app, lead_changes_topic, mongo
from app.wire import WireError, decode_lead_change

__all__ = ["sink_agent", "write_changes"]

EPOCH = settings.app_version


async def _dead_letter(changes: Sequence[dict[str, Any]], exc: Exception) -> None:
    """The changes of one lead MongoDB refuses for good, to the dead-letter topic (SPEC 12)."""
    pid, lead_id = _lead_of(changes[0])
    for change in changes:
        await retry_temporary(
            "sink",
            partial(
                dead_letter_value,
                key=f"{pid}:{lead_id}".encode(),
                reason=f"cannot be written to MongoDB: {type(exc).__name__}: "
                f"{store.describe_refusal(exc)}",
                topic=lead_changes_topic.get_topic_name(),
                value=orjson.dumps(change).decode(),
            ),
        )


def _lead_of(change: Mapping[str, Any]) -> tuple[str, str]:
    return (change["lead"]["projectId"], change["lead"]["leadId"])


async def write_changes(changes: Sequence[dict[str, Any]]) -> None:
    """Write one batch through the store; refused changes are dead-lettered."""
    await store.write_changes(mongo.db, changes, _dead_letter)


def _decode_change(message: Any) -> dict[str, Any]:
    """The LeadChange of a record (`app.wire`), as the write planner reads it; a `WireError`
    naming the field when it is not one."""
    change: dict[str, Any] = msgspec.to_builtins(decode_lead_change(message.value))
    return change


@app.agent(lead_changes_topic, concurrency=1)
async def sink_agent(stream: StreamT[bytes]) -> None:
    # events, not values: a record that is no LeadChange is dead-lettered with its position
    take_events = stream.take_events  # type: ignore[attr-defined]  # (missing from StreamT)
    batches = take_events(settings.sink_batch_size, within=settings.sink_batch_seconds)
    async for batch in batches:
        changes = []
        for event in batch:
            try:
                change = _decode_change(event.message)
            except WireError as exc:  # names the field
                await retry_temporary("sink", partial(dead_letter, event.message, str(exc)))
                continue
            # changes of an earlier epoch (before a replay) are superseded by the rebuild's
            if change["lead"]["version"] >> VERSION_EPOCH_BITS >= EPOCH:
                changes.append(change)
        if changes:
            started = time.perf_counter()
            await store.write_in_order(mongo.db, changes, write_changes)  # erasures: ADR 0020
            metrics.sink_batch(len(changes), time.perf_counter() - started)
