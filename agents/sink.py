"""The sink agent: lead-changes → MongoDB in bulk, retried until it succeeds.

Faust acks an event when the agent raises, so a failed write must never escape: a batch that
meets a temporary fault is retried with backoff (never skipped), and `concurrency=1` keeps offsets
from being committed past a batch still in flight. Writes are idempotent, so a retry after a
partial success is safe. A change MongoDB refuses for good (a value it cannot store) is
dead-lettered alone, so it never stops the sink for other leads and projects (ADR 0015).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
import orjson
from faust.types import StreamT
from pymongo.errors import BulkWriteError

from agents.erase_writes import write_in_order
from agents.materialize import DUPLICATE_KEY, LeadUpsert, MaterializationPlan, plan_writes
from app import metrics
from app.faults import dead_letter, dead_letter_value, is_temporary, retry_temporary
from app.records import VERSION_EPOCH_BITS
from app.settings import settings
from app.topology import app, lead_changes_topic, mongo
from app.wire import WireError, decode_lead_change

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


async def _write_plan(plan: MaterializationPlan) -> None:
    await _write_leads(plan)
    await _bulk(mongo.db.score_history, plan.history)
    await _bulk(mongo.db.score_history, plan.history_removals)


async def write_changes(changes: Sequence[dict[str, Any]]) -> None:
    """Write one batch: temporary faults retried for as long as they last (never skipped);
    a change MongoDB refuses is dead-lettered, and only the lead it belongs to misses it."""
    # Outside the per-lead isolation: an index MongoDB refuses is the deployment's problem, not
    # a record's, and must stop the sink loudly rather than dead-letter every change.
    await retry_temporary("sink", mongo.ensure_indexes)
    try:
        await retry_temporary("sink", partial(_write_plan, plan_writes(changes, datetime.now(UTC))))
    except Exception as exc:
        if is_temporary(exc):
            raise
        await _isolate_refused(changes, exc)


def _lead_of(change: Mapping[str, Any]) -> tuple[str, str]:
    return (change["lead"]["projectId"], change["lead"]["leadId"])


async def _isolate_refused(changes: Sequence[dict[str, Any]], exc: Exception) -> None:
    """Find the change(s) MongoDB refuses — halving the batch by lead, then taking that lead's
    changes one by one — write every other change, and dead-letter the refused ones with the
    error (SPEC 12).

    Halves are written again whole: writes are idempotent and version-guarded, so a half that
    was partly applied before the refusal is simply applied again.
    """
    leads: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for change in changes:
        leads.setdefault(_lead_of(change), []).append(change)
    if len(changes) == 1:
        await _dead_letter_changes(changes, exc)
        return
    if len(leads) == 1:  # one lead's changes, one by one in log order: only refused ones go
        for change in changes:
            await write_changes([change])
        return
    idents = list(leads)
    middle = len(idents) // 2
    for half in (idents[:middle], idents[middle:]):
        await write_changes([c for ident in half for c in leads[ident]])


async def _dead_letter_changes(changes: Sequence[dict[str, Any]], exc: Exception) -> None:
    pid, lead_id = _lead_of(changes[0])
    log.error("MongoDB refuses the changes of lead %s:%s; dead-lettered: %r", pid, lead_id, exc)
    for change in changes:
        await retry_temporary(
            "sink",
            partial(
                dead_letter_value,
                key=f"{pid}:{lead_id}".encode(),
                reason=f"cannot be written to MongoDB: {type(exc).__name__}: {_describe(exc)}",
                topic=lead_changes_topic.get_topic_name(),
                value=orjson.dumps(change).decode(),
            ),
        )


def _describe(exc: Exception) -> str:
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return "; ".join(sorted({str(e.get("errmsg", e)) for e in errors})) or str(exc)
    return str(exc)


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
            await write_in_order(mongo, changes, write_changes)  # erasures: ADR 0020
            metrics.sink_batch(len(changes), time.perf_counter() - started)
