"""The store's write plan (`store.plan`) against the first design's (`reference_plan`) on a real
MongoDB-wire server: random per-lead logs of upserts, refreshes and tombstones, across two
epochs, with history rows rescored and replayed, cut into random batches and written with
suffixes replayed and batches out of order — both planners must leave the very same documents.

This is what licenses the one-`$replaceWith` update shape (ADR 0023): same documents, version
guards and tombstones as the per-field `$cond` pipelines it replaced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.records import lead_change, lead_removal
from core.lead import HistoryRow, LeadSummary, LeadView
from store.indexes import HISTORY_INDEXES, LEAD_INDEXES
from store.plan import plan_writes
from store.writes import write_plan
from tests.integration import reference_plan

pytestmark = pytest.mark.integration

PROJECT = "prj_storeplan"
T0 = 1_780_000_000_000_000
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _lead_log(rng: random.Random, lead_id: str) -> list[dict[str, Any]]:
    """One lead's LeadChanges in log order: versions grow within an epoch, refreshes repeat the
    version with a later computedAt, a merge ends the epoch's life with a tombstone, a replay
    under the next epoch rebuilds the lead."""
    out: list[dict[str, Any]] = []
    for epoch in (1, 2):
        rows: dict[str, HistoryRow] = {}
        version = 0
        for step in range(rng.randint(1, 8)):
            at = T0 + step * 1_000_000
            roll = rng.random()
            if roll < 0.12 and version:
                out.append(orjson.loads(lead_removal(PROJECT, lead_id, "owner", at, epoch=epoch)))
                break
            changed: list[HistoryRow] = []
            kind = "refresh" if roll < 0.3 and version else "upsert"
            if kind == "upsert":
                version += 1
                event_id = f"e{rng.randint(0, 5)}"  # an event rescored, or a new one
                first = event_id not in rows
                row = HistoryRow(
                    event_id,
                    rng.choice(["page_view", "demo_request"]),
                    at - rng.randint(0, 5) * 1_000_000,
                    rng.randint(1, 50),
                    float(version),
                    float(version + 1),
                    {"path": f"/{lead_id}", "$weird": "$field"} if first else None,
                )
                rows[event_id] = row
                changed = [row, *rng.sample(list(rows.values()), k=min(len(rows), 2))]
            email = rng.choice([None, f"{lead_id}@example.com"])
            summary = LeadSummary(
                PROJECT,
                lead_id,
                score=float(version),
                last_timestamp=at,
                first_timestamp=T0,
                event_count=len(rows),
                version=version,
                email=email,
                name=rng.choice([None, "$name", "Ada"]),
                email_claim=(at, f"e{version}") if email else None,
                aliases=(lead_id,),
            )
            view = LeadView(summary, float(version) - step, "cold", step, 0, at + step)
            out.append(orjson.loads(lead_change(kind, view, changed, epoch=epoch)))  # type: ignore[arg-type]
    return out


def _deliveries(rng: random.Random, changes: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Batches as a sink may see them: cut at random, a suffix replayed after a crash, and some
    batches swapped (two sinks during a rebalance)."""
    batches: list[list[dict[str, Any]]] = []
    i = 0
    while i < len(changes):
        n = rng.randint(1, 12)
        batches.append(changes[i : i + n])
        i += n
    if len(changes) > 3:
        start = rng.randrange(len(changes))
        batches.append(changes[start:])
    for _ in range(len(batches) // 4):
        a, b = rng.randrange(len(batches)), rng.randrange(len(batches))
        batches[a], batches[b] = batches[b], batches[a]
    return batches


@dataclass
class _Db:
    """The two collections under the names the store writes (a test database per seed)."""

    leads: Any
    score_history: Any


async def _write(
    leads: Any, history: Any, planner: Any, batches: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    await leads.create_indexes(LEAD_INDEXES)
    await history.create_indexes(HISTORY_INDEXES)
    for batch in batches:
        plan = planner(batch, NOW)
        if planner is plan_writes:  # the store's own write path (inserts fall back to upserts)
            await write_plan(_Db(leads, history), plan)
            continue
        for collection, ops in (
            (leads, plan.leads),
            (history, plan.history),
            (history, plan.history_removals),
        ):
            if ops:
                await collection.bulk_write(ops, ordered=False)
    return [
        await leads.find({}, {"_id": 0}).sort([("leadId", 1)]).to_list(None),
        await history.find({}, {"_id": 0}).sort([("leadId", 1), ("eventId", 1)]).to_list(None),
    ]


@pytest.mark.parametrize("seed", range(6))
async def test_the_store_leaves_the_documents_the_first_design_left(
    mongo_db: Any, seed: int
) -> None:
    rng = random.Random(seed)
    changes: list[dict[str, Any]] = []
    for lead in range(6):  # leads interleaved as partitions interleave them; each in log order
        log = _lead_log(rng, f"lead{lead}")
        positions = sorted(rng.sample(range(len(changes) + len(log)), len(log)))
        for pos, change in zip(positions, log, strict=True):
            changes.insert(pos, change)
    assert {c["kind"] for c in changes} == {"upsert", "refresh", "remove"}
    batches = _deliveries(rng, changes)
    collections = [mongo_db[f"store_plan_{seed}_{name}"] for name in ("l", "h", "rl", "rh")]
    for collection in collections:
        await collection.drop()
    expected = await _write(*collections[2:], reference_plan.plan_writes, batches)
    got = await _write(*collections[:2], plan_writes, batches)
    assert expected[0] and expected[1], "the oracle wrote nothing"
    assert got == expected
