"""The indexes of `leads` and `score_history` (SPEC 6), created once per process and database.

The unique ones carry the store's guarantees: one document per (project, lead), one row per
(project, lead, event), and one live owner per (project, email) — the partial index ignores
documents without a string email (tombstones, leads whose email another lead holds).
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

__all__ = ["ensure_indexes"]

LEAD_INDEXES = [
    IndexModel([("projectId", ASCENDING), ("leadId", ASCENDING)], unique=True),
    IndexModel(
        [("projectId", ASCENDING), ("email", ASCENDING)],
        unique=True,
        partialFilterExpression={"email": {"$type": "string"}},
        name="projectId_email_unique",
    ),
    IndexModel([("projectId", ASCENDING), ("currentScore", DESCENDING)]),
    IndexModel([("projectId", ASCENDING), ("leadStage", ASCENDING)]),
    IndexModel([("projectId", ASCENDING), ("lastEventAt", DESCENDING)]),
]
HISTORY_INDEXES = [
    IndexModel(
        [("projectId", ASCENDING), ("leadId", ASCENDING), ("eventId", ASCENDING)], unique=True
    ),
    IndexModel([("projectId", ASCENDING), ("leadId", ASCENDING), ("timestampUs", ASCENDING)]),
]

_done: set[tuple[int, str]] = set()  # (id of the motor client, database name)


async def ensure_indexes(db: Any) -> None:
    """Create the indexes unless this process already did for `db` (idempotent on the server)."""
    ident = (id(db.client), db.name)
    if ident in _done:
        return
    await db.leads.create_indexes(LEAD_INDEXES)
    await db.score_history.create_indexes(HISTORY_INDEXES)
    _done.add(ident)
