"""Commands addressed to one lead through lead-commands: identity replies and merges (SPEC 5).

- `promote` (to the claimant): it owns the email; set email, and name/company when given.
- `merge` (to the claimant): the email has another owner: send every event to the owner
  (`absorb`), become an alias of it, and tombstone the lead's document. Idempotent: a merge
  processed twice re-sends the same events, which the owner deduplicates.
- `rebuild` (to a lead) / `rescore-project` (to every partition): recompute from stored facts,
  optionally under the current rules, and re-emit every history row.
- `absorb` (to the owner): insert the absorbed lead's events (deduplicated by eventId), recompute
  the chain in one pass, take its aliases, fill trait gaps (the owner's values win).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from agents.outbox import send_command
from app.records import ProjectRecord, lead_change, lead_removal
from app.settings import settings
from app.topology import lead_changes_topic
from core.identity import AbsorbedEvent, absorb_events, fill_traits, with_aliases
from core.lead import LeadSummary, NewEvent, lead_view, score_events, summary_from_facts
from core.scoring import VELOCITY_WINDOW_US
from tables.codec import Alias
from tables.leads import lead_store

__all__ = ["handle_command"]

log = logging.getLogger(__name__)
ABSORB_CHUNK = 500


async def _emit(
    key: bytes,
    summary: LeadSummary,
    project: ProjectRecord,
    partition: int,
    now: int,
    rows: Any = (),
) -> None:
    recent = lead_store.count_in_window(key, partition, now - VELOCITY_WINDOW_US, now)
    view = lead_view(summary, now, project.scoring, recent)
    await lead_changes_topic.send(
        key=key, value=lead_change("upsert", view, rows, epoch=settings.app_version)
    )


async def _promote(
    key: bytes,
    state: LeadSummary,
    cmd: dict[str, Any],
    project: ProjectRecord,
    partition: int,
    now: int,
) -> None:
    if state.email is not None and state.email != cmd["email"]:
        log.warning("lead %r owns %r; ignoring promotion to %r", key, state.email, cmd["email"])
        return
    promoted = fill_traits(
        replace(state, pending_email=None, email_claim=(cmd["timestamp"], cmd["eventId"])),
        email=cmd["email"],
        name=cmd.get("name"),
        company=cmd.get("company"),
        overwrite=True,
    )
    if promoted == state:
        return
    promoted = replace(promoted, version=state.version + 1)
    lead_store.put_summary(key, promoted)
    await _emit(key, promoted, project, partition, now)


async def _send_absorb(
    key: bytes, state: LeadSummary | None, cmd: dict[str, Any], partition: int
) -> None:
    """Ship every event of this lead to the owner, in chunks; the last one carries identity."""
    pid = cmd["projectId"]
    lead_id = key.decode().split(":", 1)[1]
    events = []
    for fact in lead_store.all_facts(key, partition):
        record = lead_store.event_record(key, fact.event_id)
        events.append(
            [
                fact.timestamp,
                fact.event_id,
                fact.event_type,
                fact.points,
                record[1] if record else None,
            ]
        )
    aliases = [lead_id]
    if state is not None:
        aliases += [*state.aliases, *state.anonymous_ids]
    target = f"{pid}:{cmd['into']}".encode()
    chunks = [events[i : i + ABSORB_CHUNK] for i in range(0, len(events), ABSORB_CHUNK)] or [[]]
    for n, chunk in enumerate(chunks, start=1):
        body: dict[str, Any] = {
            "command": "absorb",
            "projectId": pid,
            "from": lead_id,
            "events": chunk,
        }
        if n == len(chunks):
            body.update(
                aliases=aliases,
                name=(state.name if state and state.name else cmd.get("name")),
                company=(state.company if state and state.company else cmd.get("company")),
            )
        await send_command(target, body)


async def _merge(
    key: bytes, state: LeadSummary | Alias | None, cmd: dict[str, Any], partition: int, now: int
) -> None:
    if isinstance(state, LeadSummary) and state.email not in (None, cmd["email"]):
        # identified by another email: never merged away (SPEC 5)
        log.warning("lead %r owns %r; not merged into %r", key, state.email, cmd["into"])
        return
    if isinstance(state, Alias) and state.canonical != cmd["into"]:
        return  # already merged elsewhere; nothing of this lead is left to move
    await _send_absorb(key, state if isinstance(state, LeadSummary) else None, cmd, partition)
    if isinstance(state, LeadSummary):
        lead_store.put_alias(key, cmd["into"])
        await lead_changes_topic.send(
            key=key,
            value=lead_removal(
                cmd["projectId"],
                state.lead_id,
                state.version + 1,
                cmd["into"],
                now,
                epoch=settings.app_version,
            ),
        )


async def _absorb(
    key: bytes,
    state: LeadSummary | None,
    cmd: dict[str, Any],
    project: ProjectRecord,
    partition: int,
    now: int,
) -> None:
    summary = state or LeadSummary(project.projectId, key.decode().split(":", 1)[1])
    config = project.scoring
    incoming: dict[str, AbsorbedEvent] = {}
    for ts, event_id, event_type, points, props in cmd["events"]:
        if event_id not in incoming and not lead_store.has_event(key, event_id):
            incoming[event_id] = AbsorbedEvent(NewEvent(ts, event_id, event_type, points), props)
    rows: Any = ()
    if incoming:
        earliest = min(a.event.order for a in incoming.values())
        applied = absorb_events(
            summary,
            list(incoming.values()),
            config,
            predecessor=lead_store.predecessor(key, partition, *earliest),
            successors=list(lead_store.facts_from(key, partition, *earliest)),
        )
        for absorbed in incoming.values():
            e = absorbed.event
            lead_store.record_event(key, e.event_id, e.timestamp, absorbed.properties)
        for fact in applied.facts:
            lead_store.put_fact(key, fact)
        summary, rows = applied.summary, applied.rows
    if "aliases" in cmd:
        summary = with_aliases(summary, cmd["aliases"])
        summary = fill_traits(summary, name=cmd.get("name"), company=cmd.get("company"))
    if summary == state:
        return
    if not incoming:
        summary = replace(summary, version=summary.version + 1)
    lead_store.put_summary(key, summary)
    await _emit(key, summary, project, partition, now, rows)


REBUILD_ROWS_PER_CHANGE = 1_000


async def _rebuild(
    key: bytes,
    state: LeadSummary,
    project: ProjectRecord,
    partition: int,
    now: int,
    *,
    rescore: bool,
) -> None:
    """Recompute a lead from its stored facts; with `rescore`, under the project's current rules.

    Re-emits every history row (with its properties), so MongoDB is repaired as well.
    """
    config = project.scoring
    stored = list(lead_store.all_facts(key, partition))
    events = [
        NewEvent(
            f.timestamp,
            f.event_id,
            f.event_type,
            config.points_for(f.event_type) if rescore else f.points,
        )
        for f in stored
    ]
    facts, rows = score_events(events, config)
    for fact, old in zip(facts, stored, strict=True):
        if fact != old:
            lead_store.put_fact(key, fact)
    rebuilt = replace(summary_from_facts(state, facts), version=state.version + 1)
    lead_store.put_summary(key, rebuilt)
    full_rows = []
    for row in rows:
        record = lead_store.event_record(key, row.event_id)
        full_rows.append(replace(row, properties=(record[1] if record else None) or {}))
    recent = lead_store.count_in_window(key, partition, now - VELOCITY_WINDOW_US, now)
    view = lead_view(rebuilt, now, config, recent)
    for start in range(0, max(1, len(full_rows)), REBUILD_ROWS_PER_CHANGE):
        chunk = full_rows[start : start + REBUILD_ROWS_PER_CHANGE]
        await lead_changes_topic.send(
            key=key, value=lead_change("upsert", view, chunk, epoch=settings.app_version)
        )


async def _rescore_project(project: ProjectRecord, partition: int, now: int) -> None:
    for n, (key, state) in enumerate(lead_store.leads_of_project(project.projectId, partition)):
        await _rebuild(key, state, project, partition, now, rescore=True)
        if n % 100 == 99:
            await asyncio.sleep(0)


async def handle_command(
    key: bytes, cmd: dict[str, Any], project: ProjectRecord, partition: int, now: int
) -> None:
    state = lead_store.get(key)
    kind = cmd.get("command")
    if kind == "rescore-project":
        await _rescore_project(project, partition, now)
        return
    if isinstance(state, Alias) and kind in ("promote", "absorb", "rebuild"):
        # defensive: identity never targets an alias; hand it to the lead that absorbed it
        target = f"{project.projectId}:{state.canonical}".encode()
        await send_command(target, cmd)
        return
    if kind == "promote" and isinstance(state, LeadSummary):
        await _promote(key, state, cmd, project, partition, now)
    elif kind == "merge":
        await _merge(key, state, cmd, partition, now)
    elif kind == "rebuild" and isinstance(state, LeadSummary):
        await _rebuild(key, state, project, partition, now, rescore=bool(cmd.get("rescore")))
    elif kind == "rebuild":
        log.warning("rebuild of unknown lead %r ignored", key)
    elif kind == "absorb":
        await _absorb(
            key, state if isinstance(state, LeadSummary) else None, cmd, project, partition, now
        )
    else:
        raise ValueError(f"unknown or misdirected command {kind!r} for {key!r}")
