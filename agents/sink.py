"""The sink agent: lead-changes → MongoDB in bulk, retried until it succeeds.

Faust acks an event when the agent raises, so a failed write must never escape: the batch is
retried with backoff (never skipped), and `concurrency=1` keeps offsets from being committed
past a batch still in flight. Writes are idempotent, so a retry after a partial success is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from faust.types import StreamT
from pymongo.errors import BulkWriteError
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential

from agents.materialize import DUPLICATE_KEY, plan_writes
from app.records import VERSION_EPOCH_BITS
from app.settings import settings
from app.topology import app, lead_changes_topic, mongo

__all__ = ["sink_agent", "write_changes"]

log = logging.getLogger(__name__)
EPOCH = settings.app_version


async def _bulk(
    collection: Any,
    ops: Sequence[Any],
    emails: Sequence[tuple[str, str, str | None]] | None = None,
) -> None:
    """Unordered bulk write; an upsert that lost an insert race (11000) is re-run as an update.

    For leads, an 11000 can also be the email index: a lead that took an email over from a lead
    being merged into it, written before that lead's tombstone. The tables are the truth (one
    owner per email), so the email is taken off the other document first.
    """
    owners: Sequence[tuple[str, str, str | None] | None] = emails or [None] * len(ops)
    pending = list(zip(ops, owners, strict=True))
    for _ in range(5):
        if not pending:
            return
        try:
            await collection.bulk_write([op for op, _ in pending], ordered=False)
            return
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            pending = [pending[e["index"]] for e in errors]
            for _, owner in pending:
                if owner is not None and owner[2] is not None:
                    pid, lead_id, email = owner
                    await collection.update_many(
                        {"projectId": pid, "email": email, "leadId": {"$ne": lead_id}},
                        {"$unset": {"email": ""}},
                    )
    raise RuntimeError(f"{len(pending)} upserts kept colliding on a unique index")


async def write_changes(changes: Sequence[dict[str, Any]]) -> None:
    """Write one batch, retrying forever with capped exponential backoff."""
    plan = plan_writes(changes, datetime.now(UTC))
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.2, max=10),
        retry=retry_if_exception_type(Exception),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            await mongo.ensure_indexes()
            await _bulk(mongo.db.leads, plan.leads, plan.lead_emails)
            await _bulk(mongo.db.score_history, plan.history)
            await _bulk(mongo.db.score_history, plan.history_removals)


@app.agent(lead_changes_topic, concurrency=1)
async def sink_agent(stream: StreamT[bytes]) -> None:
    async for batch in stream.take(settings.sink_batch_size, within=settings.sink_batch_seconds):
        changes = [orjson.loads(value) for value in batch]
        # changes of an earlier epoch (before a replay) are superseded by the rebuild's
        current = [c for c in changes if c["lead"]["version"] >> VERSION_EPOCH_BITS >= EPOCH]
        if current:
            await write_changes(current)
