"""Commands addressed to one lead through lead-commands: identity replies and merges (SPEC 5).

- `promote` (to the claimant): it owns the email; set email, and name/company when given —
  only if it is the reply to the claim the lead has pending; otherwise (merged away meanwhile,
  owns another email, a stale copy) the lead sends `release` back to the identity agent.
- `merge` (to the claimant): the email has an owner with an earlier claim: send every event to
  the owner (`absorb`), become an alias of it, and tombstone the lead's document.
- `absorb` (to the owner): insert the absorbed lead's events (deduplicated by eventId), recompute
  the chain in one pass, take its aliases, fill trait gaps (the owner's values win).
- `rebuild` (to a lead) / `rescore-project` (to every partition): recompute from stored facts,
  optionally under the current rules, and re-emit every history row.

Every handler is safe to run again for the same record (at-least-once): a record the lead's
summary shows as applied only re-emits its outputs, a partly applied one is redone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

import orjson
from msgspec import UNSET

from agents import automation
from agents.outbox import send_command, send_confirm, send_release
from app import wire
from app.records import (
    OutgoingChange,
    ProjectRecord,
    lead_changes,
    lead_removal,
    split_by_bytes,
)
from app.settings import settings
from core.identity import (
    AbsorbedEvent,
    Promotion,
    absorb_events,
    fill_traits,
    merged_by_anonymous_id,
    promotion,
    superseded,
    with_aliases,
)
from core.lead import (
    HistoryRow,
    LeadSummary,
    LeadView,
    NewEvent,
    score_events,
    summary_from_facts,
)
from core.scoring import step
from tables.codec import Alias, Source
from tables.leads import lead_store

__all__ = ["COMMANDS_SOURCE", "Command", "handle_command", "history_rows", "mark_applied"]

log = logging.getLogger(__name__)
ABSORB_ENVELOPE_BYTES = 1_024  # command, projectId, from, epoch of an absorb chunk
COMMANDS_SOURCE = 1  # index of lead-commands in LeadSummary.applied


@dataclass(frozen=True)
class Command:
    """A lead command (`app.wire`) as its record arrived: for the lead `key`, at `offset`;
    the LeadChanges it makes join its batch's `changes`, after those of the records before it."""

    key: bytes
    body: wire.LeadCommand
    project: ProjectRecord
    partition: int
    offset: int
    now: int
    changes: list[OutgoingChange]

    @property
    def source(self) -> Source:
        return (COMMANDS_SOURCE, self.offset)


def mark_applied(summary: LeadSummary, source: Source) -> LeadSummary:
    applied = list(summary.applied)
    applied[source[0]] = max(applied[source[0]], source[1])
    return replace(summary, applied=(applied[0], applied[1]))


def _done(state: LeadSummary | Alias | None, source: Source) -> bool:
    return state is not None and state.applied[source[0]] >= source[1]


async def _emit(c: Command, summary: LeadSummary, rows: Any = ()) -> LeadView:
    view = lead_store.view_at(c.key, c.partition, summary, c.project.scoring, c.now)
    _send_changes(c, c.key, view, rows)
    return view


def _send_changes(c: Command, key: bytes, view: LeadView, rows: Any) -> None:
    """The LeadChange of lead `key` (of the command's partition), split under the message size
    limit (`app.records.lead_changes`), into the batch's outgoing changes."""
    for change in lead_changes(
        "upsert", view, rows, epoch=settings.app_version, max_bytes=settings.max_message_bytes
    ):
        c.changes.append((c.partition, key, change))


async def _promote(c: Command, cmd: wire.Promote, state: LeadSummary | None) -> None:
    """Take the email if this is the reply to the lead's pending claim; give it back if not
    (`state` None: the lead was merged away)."""
    claim = cmd.claim
    verdict = promotion(state, cmd.email, claim)
    lead_id = c.key.decode().split(":", 1)[1]
    if verdict is Promotion.RELEASE:
        # no e-mail addresses in logs (personal data): the lead and the claim say which
        log.info("lead %r does not take the email of claim %r: released", c.key, claim)
        await send_release(cmd.project_id, cmd.email, lead_id, claim[1])
        return
    assert state is not None
    if verdict is Promotion.AGAIN or _done(state, c.source):
        await _emit(c, state)  # its LeadChange, or the confirm, may be what the crash lost
        await send_confirm(cmd.project_id, cmd.email, lead_id, claim[1])
        return
    promoted = fill_traits(
        replace(state, pending_email=None, pending_claim=None, email_claim=claim),
        email=cmd.email,
        name=cmd.name,
        company=cmd.company,
        overwrite=True,
    )
    promoted = mark_applied(replace(promoted, version=state.version + 1), c.source)
    lead_store.put_summary(c.key, promoted)
    await _emit(c, promoted)
    await send_confirm(cmd.project_id, cmd.email, lead_id, claim[1])  # waiting claims go on


async def _send_absorb(c: Command, cmd: wire.Merge, state: LeadSummary | None) -> None:
    """Ship every event of this lead to the owner, in chunks; the last one carries identity."""
    pid = cmd.project_id
    lead_id = c.key.decode().split(":", 1)[1]
    events = []
    for fact in lead_store.all_facts(c.key, c.partition):
        record = lead_store.event_record(c.key, fact.event_id)
        events.append(
            wire.AbsorbedEventRecord(
                fact.timestamp,
                fact.event_id,
                fact.event_type,
                fact.points,
                record[1] if record else None,
            )
        )
    aliases = [lead_id]  # its anonymousIds add themselves when they are merged (_merge)
    if state is not None:
        aliases += state.aliases
    target = f"{pid}:{cmd.into}".encode()
    name = state.name if state and state.name else cmd.name
    company = state.company if state and state.company else cmd.company
    # chunks by encoded size (events carry their properties), with room for the identity part
    identity = orjson.dumps({"aliases": aliases, "name": name, "company": company})
    budget = settings.max_message_bytes - len(identity) - ABSORB_ENVELOPE_BYTES
    parts = split_by_bytes([wire.encode(e) for e in events], budget) or [[]]
    start = 0
    for n, part in enumerate(parts, start=1):
        chunk = tuple(events[start : start + len(part)])
        start += len(part)
        if n < len(parts):
            absorb = wire.Absorb(project_id=pid, from_=lead_id, events=chunk)
        else:
            absorb = wire.Absorb(
                project_id=pid,
                from_=lead_id,
                events=chunk,
                aliases=tuple(aliases),
                name=name,
                company=company,
            )
        await send_command(target, absorb)


async def _merge(c: Command, cmd: wire.Merge, state: LeadSummary | Alias | None) -> None:
    if isinstance(state, LeadSummary) and state.email not in (None, cmd.email):
        # identified by another email: never merged away (SPEC 5)
        log.warning(
            "lead %r owns an email; not merged into %r (%s@%s)",
            c.key,
            cmd.into,
            c.partition,
            c.offset,
        )
        return
    if isinstance(state, LeadSummary) and cmd.email is not None and superseded(state, cmd.cause):
        log.info("lead %r waits for an earlier claim; not merged into %r", c.key, cmd.into)
        return
    if (
        isinstance(state, LeadSummary)
        and cmd.email is None
        and not merged_by_anonymous_id(state, cmd.cause)
    ):
        # merged as an anonymousId while its own earlier identify's claim is pending: that
        # claim decides this lead first, as in log order (docs/adr/0009)
        log.info("lead %r decides by its own pending claim; not merged into %r", c.key, cmd.into)
        return
    if isinstance(state, Alias) and state.canonical != cmd.into:
        return  # already merged elsewhere; nothing of this lead is left to move
    if c.key.decode().split(":", 1)[1] == cmd.into:
        return
    # (again, if this record was applied before a crash: the owner deduplicates)
    await _send_absorb(c, cmd, state if isinstance(state, LeadSummary) else None)
    lead_id = c.key.decode().split(":", 1)[1]
    if isinstance(state, LeadSummary):
        lead_store.put_alias(
            c.key, Alias(cmd.into, mark_applied(state, c.source).applied, state.version + 1)
        )
        # SPEC 5: the lead's anonymousIds become aliases of the owner too; `timestamp` and
        # `eventId` name the identify that merged this lead, ranking it against their claims
        cause = state.email_claim or state.pending_claim or cmd.cause
        for anonymous_id in state.anonymous_ids:
            if anonymous_id != cmd.into:
                await send_command(
                    f"{cmd.project_id}:{anonymous_id}".encode(),
                    wire.Merge(
                        project_id=cmd.project_id,
                        into=cmd.into,
                        email=None,
                        timestamp=cause[0] if cause else None,
                        event_id=cause[1] if cause else None,
                    ),
                )
    elif state is None:  # a key seen only as an anonymousId: it just becomes an alias
        lead_store.put_alias(c.key, Alias(cmd.into, (-1, c.offset), 0))
        return
    removal = lead_removal(cmd.project_id, lead_id, cmd.into, c.now, epoch=settings.app_version)
    c.changes.append((c.partition, c.key, removal))


async def _absorb(c: Command, cmd: wire.Absorb, state: LeadSummary | None) -> None:
    summary = state or LeadSummary(c.project.projectId, c.key.decode().split(":", 1)[1])
    if _done(state, c.source):
        if cmd.events:  # re-emit what this record changed: rows from its earliest event on
            ts, event_id = min((e.timestamp, e.event_id) for e in cmd.events)
            await _emit(c, summary, history_rows(c.key, c.partition, ts, event_id, c.project))
        return
    incoming: dict[str, AbsorbedEvent] = {}
    for sent in cmd.events:
        if sent.event_id not in incoming and not lead_store.has_event(
            c.key, sent.event_id, unless_from=c.source
        ):
            event = NewEvent(sent.timestamp, sent.event_id, sent.event_type, sent.points)
            incoming[sent.event_id] = AbsorbedEvent(event, sent.properties)
    rows: Any = ()
    if incoming:
        earliest = min(a.event.order for a in incoming.values())
        applied = absorb_events(
            summary,
            list(incoming.values()),
            c.project.scoring,
            predecessor=lead_store.predecessor(c.key, c.partition, *earliest),
            # a redo may find some of its own facts written already: they are not successors
            successors=[
                f
                for f in lead_store.facts_from(c.key, c.partition, *earliest)
                if f.event_id not in incoming
            ],
        )
        for absorbed in incoming.values():
            e = absorbed.event
            lead_store.record_event(c.key, e.event_id, e.timestamp, absorbed.properties, c.source)
        for fact in applied.facts:
            lead_store.put_fact(c.key, fact)
        summary, rows = applied.summary, applied.rows
    if cmd.aliases is not UNSET:  # the last chunk: the absorbed lead's identity
        summary = with_aliases(summary, cmd.aliases)
        summary = fill_traits(summary, name=cmd.name, company=cmd.company)
    if summary == state:
        return
    if not incoming:
        summary = replace(summary, version=summary.version + 1)
    summary = mark_applied(summary, c.source)
    lead_store.put_summary(c.key, summary)
    view = await _emit(c, summary, rows)
    await automation.fire(c.project, state, view, c.now)  # SPEC 9: a merge absorbed


def history_rows(
    key: bytes, partition: int, timestamp: int, event_id: str, project: ProjectRecord
) -> list[HistoryRow]:
    """History rows (with properties) from (timestamp, eventId) on, as stored: what a record
    emitted, for re-emitting it after a crash."""
    out = []
    previous = lead_store.predecessor(key, partition, timestamp, event_id)
    for fact in lead_store.facts_from(key, partition, timestamp, event_id):
        if previous is None:
            before = 0.0
        else:
            before, _ = step(
                previous.score_after, fact.timestamp - previous.timestamp, 0, project.scoring
            )
        record = lead_store.event_record(key, fact.event_id)
        out.append(
            HistoryRow(
                fact.event_id,
                fact.event_type,
                fact.timestamp,
                fact.points,
                before,
                fact.score_after,
                (record[1] if record else None) or {},
            )
        )
        previous = fact
    return out


async def _rebuild(c: Command, key: bytes, state: LeadSummary, *, rescore: bool) -> None:
    """Recompute a lead from its stored facts; with `rescore`, under the project's current rules.

    Re-emits every history row (with its properties), so MongoDB is repaired as well.
    """
    config = c.project.scoring
    stored = list(lead_store.all_facts(key, c.partition))
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
    view = lead_store.view_at(key, c.partition, rebuilt, config, c.now)
    _send_changes(c, key, view, full_rows)
    await automation.fire(c.project, state, view, c.now)  # SPEC 9: a rebuild or rescore


async def _rescore_project(c: Command) -> None:
    leads = list(lead_store.leads_of_project(c.project.projectId, c.partition))
    for n, (key, state) in enumerate(leads):
        await _rebuild(c, key, state, rescore=True)
        if n % 100 == 99:
            await asyncio.sleep(0)


async def handle_command(c: Command) -> None:
    """Run a lead command (an `erase` goes to `agents.erasure`, an `event` is scored)."""
    cmd = c.body
    if isinstance(cmd, wire.RescoreProject):
        await _rescore_project(c)
        return
    state = lead_store.get(c.key)
    if isinstance(cmd, wire.Promote):
        # never handed on to the lead that absorbed this one: a promote is for its claimant only
        await _promote(c, cmd, state if isinstance(state, LeadSummary) else None)
        return
    if isinstance(state, Alias) and isinstance(cmd, wire.Absorb | wire.Rebuild):
        # an absorb or rebuild for a lead merged meanwhile: hand it to the lead that absorbed it
        await send_command(f"{c.project.projectId}:{state.canonical}".encode(), cmd)
        return
    if isinstance(cmd, wire.Merge):
        await _merge(c, cmd, state)
    elif isinstance(cmd, wire.Rebuild) and isinstance(state, LeadSummary):
        await _rebuild(c, c.key, state, rescore=cmd.rescore)
    elif isinstance(cmd, wire.Rebuild):
        log.warning("rebuild of unknown lead %r ignored", c.key)
    elif isinstance(cmd, wire.Absorb):
        await _absorb(c, cmd, state if isinstance(state, LeadSummary) else None)
    else:
        raise ValueError(f"misdirected command {type(cmd).__name__} for {c.key!r}")
