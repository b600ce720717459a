"""The MongoDB-wire server's own bulk-write rate for the sink's documents (the reference of (3)).

Takes real LeadChanges (read from a scoring run's lead-changes topic), cuts them into batches of
`LEADSCORE_SINK_BATCH` changes like the sink's `stream.take`, coalesces each batch to one upsert
per lead and one per history row, and writes them to a fresh database with the product's indexes:

- `plain`: the same documents as plain `{$set: ...}` upserts (what any MongoDB client would send);
- `sink`: exactly `store.plan.plan_writes` written by `store.writes.write_plan` (first writes
  of history rows as inserts, the rest as version-guarded update pipelines; leads and history
  in two concurrent bulk writes), i.e. the sink's writes without Kafka or Faust around them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import UpdateOne

from store.indexes import ensure_indexes
from store.plan import plan_writes
from store.writes import write_plan

__all__ = ["measure"]


def _plain_ops(changes: Sequence[dict[str, Any]]) -> tuple[list[UpdateOne], list[UpdateOne]]:
    leads: dict[tuple[str, str], dict[str, Any]] = {}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for change in changes:
        lead = change["lead"]
        ident = (lead["projectId"], lead["leadId"])
        held = leads.get(ident)
        if held is None or held["version"] <= lead["version"]:
            leads[ident] = lead
        for row in change.get("history", ()):
            rows[(*ident, row["eventId"])] = row
    lead_ops = [
        UpdateOne(
            {"projectId": pid, "leadId": lid},
            {"$set": {k: v for k, v in doc.items() if k not in ("projectId", "leadId")}},
            upsert=True,
        )
        for (pid, lid), doc in leads.items()
    ]
    row_ops = [
        UpdateOne(
            {"projectId": pid, "leadId": lid, "eventId": eid},
            {"$set": {k: v for k, v in row.items() if k != "eventId"}},
            upsert=True,
        )
        for (pid, lid, eid), row in rows.items()
    ]
    return lead_ops, row_ops


async def measure(
    mongo_url: str, db_name: str, changes: list[dict[str, Any]], batch: int, variant: str
) -> dict[str, Any]:
    client: AsyncIOMotorClient[Any] = AsyncIOMotorClient(mongo_url, tz_aware=True)
    db = client[db_name]
    await ensure_indexes(db)
    ops = 0
    plan_seconds = 0.0
    started = time.monotonic()
    try:
        for i in range(0, len(changes), batch):
            chunk = changes[i : i + batch]
            t = time.monotonic()
            if variant != "plain":  # the store's exact writes, through its own write path
                plan = plan_writes(chunk, datetime.now(UTC))
                plan_seconds += time.monotonic() - t
                await write_plan(db, plan)
                ops += len(plan.leads) + len(plan.history)
                continue
            lead_ops, row_ops = _plain_ops(chunk)
            plan_seconds += time.monotonic() - t
            if lead_ops:
                await db.leads.bulk_write(lead_ops, ordered=False)
            if row_ops:
                await db.score_history.bulk_write(row_ops, ordered=False)
            ops += len(lead_ops) + len(row_ops)
        seconds = time.monotonic() - started
    finally:
        await client.drop_database(db_name)
        client.close()
    return {
        "variant": variant,
        "changes": len(changes),
        "batch": batch,
        "operations": ops,
        "seconds": round(seconds, 2),
        "eventsPerSec": round(len(changes) / seconds, 1),
        "opsPerSec": round(ops / seconds, 1),
        "clientPlanSeconds": round(plan_seconds, 2),
    }
