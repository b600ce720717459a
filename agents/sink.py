"""The sink agent: lead-changes → MongoDB in bulk, retried until it succeeds.

Faust acks an event when the agent raises, so a failed write must never escape: the batch is
retried with backoff (never skipped), and `concurrency=1` keeps offsets from being committed
past a batch still in flight. Writes are idempotent, so a retry after a partial success is safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from faust.types import StreamT
from pymongo.errors import BulkWriteError
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential

from agents.erase_writes import write_in_order
from agents.materialize import DUPLICATE_KEY, LeadUpsert, MaterializationPlan, plan_writes
from app import metrics
from app.records import VERSION_EPOCH_BITS
from app.settings import settings
from app.topology import app, lead_changes_topic, mongo

__all__ = ["sink_agent", "write_changes"]

log = logging.getLogger(__name__)
EPOCH = settings.app_version


async def _bulk(collection: Any, ops: Sequence[Any]) -> None:
    """Unordered bulk write; an upsert that lost an insert race (11000) is re-run as an update."""
    pending = list(ops)
    for _ in range(5):
        if not pending:
            return
        try:
            await collection.bulk_write(pending, ordered=False)
            return
        except BulkWriteError as exc:
            pending = [pending[e["index"]] for e in _duplicate_key_errors(exc)]
    raise RuntimeError(f"{len(pending)} upserts kept colliding on a unique index")


def _duplicate_key_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
    if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return errors


async def _write_leads(plan: MaterializationPlan) -> None:
    """Like `_bulk`, settling the email index the way identity does (SPEC 5).

    Two live documents can briefly carry one email: a lead whose identify turned out to be
    earlier takes the email over from a lead about to be merged into it, or a replay passes
    through other owners first. The earlier claim (identify timestamp, eventId) keeps the email;
    the other document is written without it — its lead is on its way to being merged.
    """
    leads = mongo.db.leads
    pending = list(zip(plan.leads, plan.lead_upserts, strict=True))
    for _ in range(5):
        if not pending:
            return
        try:
            await leads.bulk_write([op for op, _ in pending], ordered=False)
            return
        except BulkWriteError as exc:
            retry = []
            for error in _duplicate_key_errors(exc):
                op, upsert = pending[error["index"]]
                if upsert is not None and upsert.doc.get("email") is not None:
                    op = await _settle_email(leads, upsert)
                retry.append((op, upsert))
            pending = retry
    raise RuntimeError(f"{len(pending)} lead upserts kept colliding on a unique index")


async def _settle_email(leads: Any, upsert: LeadUpsert) -> Any:
    holder = await leads.find_one({"projectId": upsert.project_id, "email": upsert.doc["email"]})
    if holder is None or holder["leadId"] == upsert.lead_id:
        return upsert.op()  # an insert race on (projectId, leadId): retry as an update
    ours = tuple(upsert.doc.get("emailClaim") or (float("inf"), ""))
    theirs = tuple(holder.get("emailClaim") or (float("inf"), ""))
    if ours < theirs:
        await leads.update_one(
            {"projectId": holder["projectId"], "leadId": holder["leadId"]},
            {"$unset": {"email": "", "emailClaim": ""}},
        )
        return upsert.op()
    return upsert.op(without_email=True)


async def write_changes(changes: Sequence[dict[str, Any]]) -> None:
    """Write one batch, retrying forever with capped exponential backoff."""
    plan = plan_writes(changes, datetime.now(UTC))
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.2, max=10),
        retry=retry_if_exception_type(Exception),
        before_sleep=_count_and_log,
        reraise=True,
    ):
        with attempt:
            await mongo.ensure_indexes()
            await _write_leads(plan)
            await _bulk(mongo.db.score_history, plan.history)
            await _bulk(mongo.db.score_history, plan.history_removals)


_log_retry = before_sleep_log(log, logging.WARNING)


def _count_and_log(retry_state: Any) -> None:
    metrics.mongo_error("sink")
    _log_retry(retry_state)


@app.agent(lead_changes_topic, concurrency=1)
async def sink_agent(stream: StreamT[bytes]) -> None:
    async for batch in stream.take(settings.sink_batch_size, within=settings.sink_batch_seconds):
        changes = [orjson.loads(value) for value in batch]
        # changes of an earlier epoch (before a replay) are superseded by the rebuild's
        current = [c for c in changes if c["lead"]["version"] >> VERSION_EPOCH_BITS >= EPOCH]
        if current:
            started = time.perf_counter()
            await write_in_order(mongo, current, write_changes)  # erasures: ADR 0020
            metrics.sink_batch(len(current), time.perf_counter() - started)
