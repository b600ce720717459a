"""The hook where a lead's state changes: which automation rules fire, sent as candidates to the
automation-firings topic (keyed by firing id). Never delivers anything itself: the scoring path
only pays for the pure trigger check and, when a rule fires, one produce.

Costs no table read: the state before comes from the summary the caller already holds and the
state after from the view it has just computed for its LeadChange.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import orjson

from app.batch_send import send_in_batches
from app.clock import now_us
from app.faust_patches import aiokafka_producer
from app.records import ProjectRecord, lead_json
from app.settings import settings
from app.topology import app
from core.automation import (
    AutomationRule,
    Cause,
    Firing,
    firings_for,
    firings_of,
    max_age_us,
    moment_after,
    moment_before,
)
from core.lead import LeadSummary, LeadView
from core.timeutil import format_timestamp

__all__ = ["FiringRecord", "candidates", "fire", "fired", "records", "send_firings"]

FiringRecord = tuple[bytes, bytes]
_MAX_AGE = max_age_us(settings.automation_max_age)
_FIRINGS_TOPIC = settings.topic("automation-firings")
_INTERNAL = ("version", "scoreAtLastEvent", "emailClaim")


def candidates(
    project: ProjectRecord,
    before: LeadSummary | None,
    view: LeadView,
    now: int,
    event: Cause | None = None,
) -> list[FiringRecord]:
    """Firing candidates of one change of a canonical lead.

    `event` is the event the change applied; without one (a merge absorbed, a rebuild, a
    rescore) the cause is the lead's latest event and `event` triggers cannot fire.
    """
    rules = project.active_automations
    if not rules:
        return []
    after = view.summary
    cause = event
    if cause is None and after.last_timestamp is not None:
        cause = Cause(after.last_event_id, after.last_timestamp)
    found = firings_for(
        project.projectId,
        after.lead_id,
        rules,
        moment_before(before, project.scoring, now),
        moment_after(view),
        cause,
        applied_event_type=event.event_type if event is not None else None,
        now=now,
        max_age_us=_MAX_AGE,
    )
    return records(project, after.lead_id, lambda: view, found)


def fired(
    project: ProjectRecord,
    lead_id: str,
    view: Callable[[], LeadView],
    rules: list[AutomationRule],
    cause: Cause,
    now: int,
) -> list[FiringRecord]:
    """The candidates of `rules`, which fired for the change `cause` made (`view`: the lead
    just after it, asked for only if some firing is to be delivered)."""
    found = firings_of(project.projectId, lead_id, rules, cause, now=now, max_age_us=_MAX_AGE)
    return records(project, lead_id, view, found)


def records(
    project: ProjectRecord, lead_id: str, view: Callable[[], LeadView], found: list[Firing]
) -> list[FiringRecord]:
    """The automation-firings records of one change's firings (they share its cause). A stale
    firing is recorded as skipped and never delivered, so it carries no lead (`"lead": null`):
    nobody receives that payload, and for a replay's or a backfill's firings the lead as it
    was after each old event would cost a scoring pass of its own."""
    if not found:
        return []
    by_id = project.automation_by_id
    lead = None
    if not all(f.stale for f in found):
        lead = {k: v for k, v in lead_json(view()).items() if k not in _INTERNAL}
    decided_at = now_us()
    event_json = {
        "eventId": found[0].cause.event_id,
        "eventType": found[0].cause.event_type,
        "timestamp": format_timestamp(found[0].cause.timestamp),
    }
    out = []
    for f in found:
        rule = by_id[f.rule_id]
        record: dict[str, Any] = {
            "firingId": f.firing_id,
            "projectId": project.projectId,
            "ruleId": rule.id,
            "ruleName": rule.name,
            "trigger": rule.trigger_json,
            "leadId": lead_id,
            "day": f.day,
            "stale": f.stale,
            "event": event_json,  # one cause per change
            "lead": None if f.stale else lead,
            "decidedAt": decided_at,
        }
        out.append((f.firing_id.encode(), orjson.dumps(record)))
    return out


async def send_firings(candidates: list[FiringRecord]) -> None:
    """Produce candidates as batches and wait for the broker (so they are durable before the
    caller's offsets are committed). A firing id met twice in one call (an `event` rule and
    two events of its type on one day) is sent once: the first, which the firing agent would
    decide anyway (first wins). The partition is any stable function of the id (CRC-32, not the
    pure-Python murmur2 of Kafka's default partitioner: ids are unique, so nothing caches it);
    correctness does not rest on it, since MongoDB's unique `_id` decides."""
    seen: set[bytes] = set()
    out: list[tuple[int, bytes, bytes | None]] = []
    for key, value in candidates:
        if key not in seen:
            seen.add(key)
            out.append((zlib.crc32(key) % settings.partitions, key, value))
    if out:
        await send_in_batches(aiokafka_producer(app), _FIRINGS_TOPIC, out)


async def fire(
    project: ProjectRecord,
    before: LeadSummary | None,
    view: LeadView,
    now: int,
    event: Cause | None = None,
) -> None:
    """`candidates` and their produce, for the paths that are already async (merge, rebuild)."""
    await send_firings(candidates(project, before, view, now, event))
