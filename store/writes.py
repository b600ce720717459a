"""The sink's writes: a batch of LeadChanges planned (`store.plan`) and bulk-written, temporary
faults retried, a change MongoDB refuses for good isolated from the rest (ADR 0015).

Writes are idempotent and version-guarded, so a retry after a partial success, a batch written
twice, or two sinks briefly writing the same lead during a rebalance all leave the same documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo.errors import BulkWriteError

from app.faults import is_temporary, retry_temporary
from store.indexes import ensure_indexes
from store.plan import DUPLICATE_KEY, LeadUpsert, MaterializationPlan, plan_writes

__all__ = ["Refused", "describe_refusal", "write_changes", "write_plan"]

log = logging.getLogger(__name__)

Change = dict[str, Any]
Refused = Callable[[Sequence[Change], Exception], Awaitable[None]]
"""Called with the changes of ONE lead that MongoDB refuses for good, and the error."""

_ATTEMPTS = 5


async def _bulk(
    collection: Any, ops: Sequence[Any], fallbacks: Sequence[Any] | None = None
) -> None:
    """Unordered bulk write. An op refused on a unique index (11000) is re-run as its fallback
    (an insert of a row that exists already: the guarded upsert), or as itself (an upsert that
    lost an insert race: it is an update now)."""
    pending = list(zip(ops, fallbacks or ops, strict=True))
    for _ in range(_ATTEMPTS):
        if not pending:
            return
        try:
            await collection.bulk_write([op for op, _ in pending], ordered=False)
            return
        except BulkWriteError as exc:
            retry = [pending[e["index"]][1] for e in _duplicate_key_errors(exc)]
            pending = list(zip(retry, retry, strict=True))
    raise RuntimeError(f"{len(pending)} upserts kept colliding on a unique index")


def _duplicate_key_errors(exc: BulkWriteError) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
    if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return errors


async def _write_leads(leads: Any, plan: MaterializationPlan) -> None:
    """Like `_bulk`, settling the email index the way identity does (SPEC 5).

    Two live documents can briefly carry one email: a lead whose identify turned out to be
    earlier takes the email over from a lead about to be merged into it, or a replay passes
    through other owners first. The earlier claim (identify timestamp, eventId) keeps the email;
    the other document is written without it — its lead is on its way to being merged.
    """
    pending = list(zip(plan.leads, plan.lead_upserts, strict=True))
    for _ in range(_ATTEMPTS):
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


async def write_plan(db: Any, plan: MaterializationPlan) -> None:
    """The leads and the history rows in two concurrent bulk writes (independent collections:
    the round trips overlap), then the rows of merged-away leads removed."""
    results = await asyncio.gather(
        _write_leads(db.leads, plan),
        _bulk(db.score_history, plan.history, plan.history_fallbacks),
        return_exceptions=True,
    )
    for result in results:  # both finished: a retry never overlaps a write still in flight
        if isinstance(result, BaseException):
            raise result
    await _bulk(db.score_history, plan.history_removals)


async def write_changes(db: Any, changes: Sequence[Change], refused: Refused) -> None:
    """Write one batch: temporary faults retried for as long as they last (never skipped);
    a change MongoDB refuses goes to `refused`, and only the lead it belongs to misses it."""
    # Outside the per-lead isolation: an index MongoDB refuses is the deployment's problem, not
    # a record's, and must stop the sink loudly rather than dead-letter every change.
    await retry_temporary("sink", partial(ensure_indexes, db))
    try:
        plan = plan_writes(changes, datetime.now(UTC))
        await retry_temporary("sink", partial(write_plan, db, plan))
    except Exception as exc:
        if is_temporary(exc):
            raise
        await _isolate_refused(db, changes, exc, refused)


def _lead_of(change: Mapping[str, Any]) -> tuple[str, str]:
    return (change["lead"]["projectId"], change["lead"]["leadId"])


async def _isolate_refused(
    db: Any, changes: Sequence[Change], exc: Exception, refused: Refused
) -> None:
    """Find the change(s) MongoDB refuses — halving the batch by lead, then taking that lead's
    changes one by one — write every other change, and hand the refused ones to `refused`
    with the error (SPEC 12).

    Halves are written again whole: writes are idempotent and version-guarded, so a half that
    was partly applied before the refusal is simply applied again.
    """
    leads: dict[tuple[str, str], list[Change]] = {}
    for change in changes:
        leads.setdefault(_lead_of(change), []).append(change)
    if len(changes) == 1:
        pid, lead_id = _lead_of(changes[0])
        log.error("MongoDB refuses the changes of lead %s:%s: %r", pid, lead_id, exc)
        await refused(changes, exc)
        return
    if len(leads) == 1:  # one lead's changes, one by one in log order: only refused ones go
        for change in changes:
            await write_changes(db, [change], refused)
        return
    idents = list(leads)
    middle = len(idents) // 2
    for half in (idents[:middle], idents[middle:]):
        await write_changes(db, [c for ident in half for c in leads[ident]], refused)


def describe_refusal(exc: Exception) -> str:
    """The server's reasons for refusing a write, for a dead letter."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return "; ".join(sorted({str(e.get("errmsg", e)) for e in errors})) or str(exc)
    return str(exc)
