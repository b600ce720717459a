"""The decay sweep: refresh materialized scores, stages and velocity of leads with no new events.

Each worker sweeps only the partitions it owns. A lead is re-emitted only when what users see
(rounded score, stage, velocity) differs from the previous sweep; the first sweep after a start
re-emits every lead, since the worker cannot know what was materialized while it was down.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from app.clock import now_us
from app.faults import is_temporary, retry_temporary
from app.records import lead_change
from app.settings import settings
from app.topology import app, directory, lead_changes_topic
from core.lead import LeadSummary, LeadView
from tables.leads import lead_store, owned_leads

__all__ = ["decay_sweep", "sweep_once"]

log = logging.getLogger(__name__)
_last_sweep_at: int | None = None


def _seen(view: LeadView) -> tuple[float, str, int]:
    return (view.current_score, view.lead_stage, view.events_last_24h)


def _view(partition: int, key: bytes, summary: LeadSummary, at: int) -> LeadView | None:
    project = directory.get(summary.project_id)
    if project is None:
        return None
    return lead_store.view_at(key, partition, summary, project.scoring, at)


def _refresh(
    partition: int, key: bytes, summary: LeadSummary, now: int, previous: int | None
) -> bytes | None:
    """The refresh to emit for one lead, or None when what users see has not moved."""
    current = _view(partition, key, summary, now)
    if current is None:
        return None
    if previous is not None:
        before = _view(partition, key, summary, previous)
        if before is not None and _seen(before) == _seen(current):
            return None
    return lead_change("refresh", current, epoch=settings.app_version)


async def sweep_once(now: int, previous: int | None) -> int:
    """Emit refreshes for owned leads whose visible figures moved since `previous`.

    One lead whose state cannot be shown (a value no check caught) is logged and skipped, never
    the end of the sweep for the others; a produce fault is retried (ADR 0015).
    """
    emitted = 0
    for n, (partition, key, summary) in enumerate(owned_leads()):
        if n % 500 == 499:
            await asyncio.sleep(0)  # keep the loop responsive on large partitions
        try:
            change = _refresh(partition, key, summary, now, previous)
        except Exception as exc:
            if is_temporary(exc):
                raise
            log.exception("decay sweep skips lead %r: its state cannot be shown", key)
            continue
        if change is None:
            continue
        if not isinstance(lead_store.get(key), LeadSummary):
            continue  # erased (or merged) since this scan began: its iterator saw the old state
        await retry_temporary("sweep", partial(lead_changes_topic.send, key=key, value=change))
        emitted += 1
    return emitted


@app.timer(interval=settings.sweep_interval)
async def decay_sweep() -> None:
    global _last_sweep_at
    if not directory.loaded:
        return
    now = now_us()
    emitted = await sweep_once(now, _last_sweep_at)
    _last_sweep_at = now
    log.info("decay sweep refreshed %d leads", emitted)
