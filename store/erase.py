"""The sink's part of an erasure (ADR 0020): `erase` lead changes delete, in MongoDB, the
lead's document, history rows, automation firings and dead letters.

A batch is written in order around its erasures: the changes before an erasure, then the
erasure, then the rest — so an upsert of the lead that preceded its erasure on the topic can
never bring its document back, and a new lead of the same key after it is written normally.
(`automation_firings` and `dead_letters` belong to their own modules; an erasure is the one
write of the store that reaches them, so that it is one idempotent step.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.faults import retry_temporary

__all__ = ["write_in_order"]

WriteChanges = Callable[[Sequence[dict[str, Any]]], Awaitable[None]]


async def _erase(db: Any, change: dict[str, Any]) -> None:
    pid, lead_id = change["lead"]["projectId"], change["lead"]["leadId"]

    async def delete() -> None:  # idempotent: safe to run again after a temporary fault
        await db.leads.delete_many({"projectId": pid, "leadId": lead_id})
        await db.score_history.delete_many({"projectId": pid, "leadId": lead_id})
        await db.automation_firings.delete_many({"projectId": pid, "leadId": lead_id})
        await db.dead_letters.delete_many({"projectId": pid, "key": f"{pid}:{lead_id}"})

    await retry_temporary("sink", delete)


async def write_in_order(
    db: Any, changes: Sequence[dict[str, Any]], write_changes: WriteChanges
) -> None:
    pending: list[dict[str, Any]] = []
    for change in changes:
        if change.get("kind") != "erase":
            pending.append(change)
            continue
        if pending:
            await write_changes(pending)
            pending = []
        await _erase(db, change)
    if pending:
        await write_changes(pending)
