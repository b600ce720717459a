"""The hook where a lead's state changes: which automation rules fire, sent as candidates to the
automation-firings topic (keyed by firing id). Never delivers anything itself: the scoring path
only pays for the pure trigger check and, when a rule fires, one produce.

Costs no table read: the state before comes from the summary the caller already holds and the
state after from the view it has just computed for its LeadChange.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.clock import now_us
from app.records import ProjectRecord, lead_json
from app.settings import settings
from app.topology import firings_topic
from core.automation import Cause, firings_for, max_age_us, moment_after, moment_before
from core.lead import LeadSummary, LeadView
from core.timeutil import format_timestamp

__all__ = ["FiringRecord", "candidates", "fire", "send_firings"]

FiringRecord = tuple[bytes, bytes]
_MAX_AGE = max_age_us(settings.automation_max_age)
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
    if not found:
        return []
    by_id = project.automation_by_id
    lead = {k: v for k, v in lead_json(view).items() if k not in _INTERNAL}
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
            "leadId": after.lead_id,
            "day": f.day,
            "stale": f.stale,
            "event": event_json,  # one cause per change
            "lead": lead,
            "decidedAt": decided_at,
        }
        out.append((f.firing_id.encode(), orjson.dumps(record)))
    return out


async def send_firings(records: list[FiringRecord]) -> None:
    for key, value in records:
        await firings_topic.send(key=key, value=value)


async def fire(
    project: ProjectRecord,
    before: LeadSummary | None,
    view: LeadView,
    now: int,
    event: Cause | None = None,
) -> None:
    """`candidates` and their produce, for the paths that are already async (merge, rebuild)."""
    await send_firings(candidates(project, before, view, now, event))
