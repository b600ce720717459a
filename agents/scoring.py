"""The scoring agent: decode → dedup → core → tables → emit a LeadChange (one hop per event)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from typing import Any

import orjson
from faust.types import StreamT

from agents.automation import FiringRecord, candidates, send_firings
from agents.erasure import erasures, handle_erase
from agents.lead_commands import (
    COMMANDS_SOURCE,
    Command,
    handle_command,
    history_rows,
    mark_applied,
)
from agents.outbox import forward_event, send_claim
from app import faults, metrics, wire
from app.clock import now_us
from app.faults import dead_letter, isolate
from app.partitioning import partition_for
from app.records import ProjectRecord, lead_changes
from app.settings import settings
from app.topology import (
    app,
    directory,
    lead_changes_topic,
    scoring_source,
)
from core.automation import Cause
from core.events import Event, FieldError, InvalidEvent, validate_event
from core.identity import claims, normalize_email, note_anonymous_id
from core.lead import HistoryRow, LeadSummary, LeadView, NewEvent, apply_event
from tables.codec import Alias, Source
from tables.leads import lead_store

__all__ = ["score_event", "scoring_agent"]

log = logging.getLogger(__name__)
EVENTS_TOPIC = settings.topic("events")


async def _decode(message: Any, data: Any) -> tuple[Event, ProjectRecord] | None:
    """A valid event and its project, or None after dead-lettering the record with the reason."""
    try:
        decoded = validate_event(
            data,
            now=now_us(),
            default_timestamp=round(message.timestamp * 1000) * 1000,
            require_event_id=True,
        )
    except InvalidEvent as exc:
        await dead_letter(message, "invalid event", exc.errors)
        return None
    project = directory.get(decoded.project_id)
    if project is None:
        await directory.sync()  # it may have been created a moment ago on another worker
        project = directory.get(decoded.project_id)
    if project is None:
        await dead_letter(message, "unknown project", [FieldError("projectId", "unknown project")])
        return None
    return decoded, project


def score_event(
    decoded: Event,
    project: ProjectRecord,
    key: bytes,
    partition: int,
    now: int,
    source: Source,
    logged_at: int,
) -> tuple[list[bytes], wire.Claim | None, list[FiringRecord]] | None:
    """Apply one event to its lead's tables.

    Returns the LeadChange to emit (in parts under the message size limit), for an `identify`
    that should claim its email the claim, and the automation firings the change triggers;
    None for a duplicate. A record the summary shows as applied (a crash lost only its
    outputs) returns them again; one applied in part is redone.
    """
    store = lead_store
    state = store.get(key)
    if isinstance(state, LeadSummary) and state.applied[source[0]] >= source[1]:
        return _outputs_again(decoded, project, key, partition, now, state, logged_at)
    if store.has_event(key, decoded.event_id, unless_from=source):
        return None
    if isinstance(state, LeadSummary):
        summary = state
    else:
        summary = LeadSummary(decoded.project_id, key.decode().split(":", 1)[1])
    config = project.scoring
    new = NewEvent(
        decoded.timestamp,
        decoded.event_id,
        decoded.event_type,
        config.points_for(decoded.event_type),
    )
    last = summary.last_order
    if last is None or new.order > last:
        applied = apply_event(summary, new, config, properties=decoded.properties)
    else:
        successors = store.facts_from(key, partition, new.timestamp, new.event_id)
        applied = apply_event(
            summary,
            new,
            config,
            properties=decoded.properties,
            predecessor=store.predecessor(key, partition, new.timestamp, new.event_id),
            # a redo may find its own fact, and successors rescored in part: walk them all
            successors=[f for f in successors if f.event_id != new.event_id],
            exhaustive=True,
        )
    updated = mark_applied(note_anonymous_id(applied.summary, decoded.anonymous_id), source)
    claim: wire.Claim | None = None
    email = normalize_email((decoded.properties or {}).get("email"))
    # one claim at a time, the earliest identify's: its reply decides what this lead becomes
    order = (logged_at, decoded.event_id)
    if decoded.event_type == "identify" and email and claims(updated, order):
        updated = replace(updated, pending_email=email, pending_claim=order)
        claim = _claim(decoded, updated, email, logged_at)
    store.record_event(key, decoded.event_id, decoded.timestamp, decoded.properties, source)
    for fact in applied.facts:
        store.put_fact(key, fact)
    store.put_summary(key, updated)
    view = store.view_at(key, partition, updated, config, now)
    changes = _changes(view, applied.rows)
    cause = Cause(decoded.event_id, decoded.timestamp, decoded.event_type)
    firings = candidates(
        project, state if isinstance(state, LeadSummary) else None, view, now, cause
    )
    return changes, claim, firings


def _changes(view: LeadView, rows: Iterable[HistoryRow]) -> list[bytes]:
    return lead_changes(
        "upsert", view, rows, epoch=settings.app_version, max_bytes=settings.max_message_bytes
    )


def _claim(decoded: Event, lead: LeadSummary, email: str, logged_at: int) -> wire.Claim:
    """A claim, ranked by when the identify entered the log (its record's Kafka timestamp):
    the first to claim an email owns it (SPEC 5), and a replay ranks it the same way."""
    props = decoded.properties or {}
    return wire.Claim(
        project_id=decoded.project_id,
        email=email,
        claimant=lead.lead_id,
        event_id=decoded.event_id,
        timestamp=logged_at,
        name=props.get("name"),
        company=props.get("company"),
    )


def _outputs_again(
    decoded: Event,
    project: ProjectRecord,
    key: bytes,
    partition: int,
    now: int,
    state: LeadSummary,
    logged_at: int,
) -> tuple[list[bytes], wire.Claim | None, list[FiringRecord]]:
    """The LeadChange (rows from the event on) and claim an applied record emitted. Its
    firings, if any, were produced before the crash or are lost with the state before
    (ADR 0019): a redo never fires twice."""
    rows = history_rows(key, partition, decoded.timestamp, decoded.event_id, project)
    view = lead_store.view_at(key, partition, state, project.scoring, now)
    changes = _changes(view, rows)
    claim = None
    email = normalize_email((decoded.properties or {}).get("email"))
    if (
        decoded.event_type == "identify"
        and email
        and state.pending_email == email
        and state.pending_claim in (None, (logged_at, decoded.event_id))
    ):
        claim = _claim(decoded, state, email, logged_at)  # the claim this record made
    return changes, claim, []


@app.agent(scoring_source)
async def scoring_agent(stream: StreamT[bytes]) -> None:
    """Thin: decode, route to the owning partition, then score or run a lead command."""
    await directory.wait_loaded()
    await erasures.wait_loaded()  # before any event: erased keys' events are dropped
    async for event in stream.events():
        message = event.message
        metrics.event_consumed("events" if message.topic == EVENTS_TOPIC else "lead-commands")
        with metrics.processing_time():
            # a record must never stop its partition, nor be skipped over a temporary fault
            await isolate("scoring", message, partial(_process, message, event.value))


async def _process(message: Any, value: bytes) -> None:
    logged_at = round(message.timestamp * 1000) * 1000  # the record's Kafka timestamp, in µs
    if message.topic == EVENTS_TOPIC and erasures.drops_record(message.key, logged_at):
        metrics.event_scored("erased")  # not even dead-lettered: its key was erased (ADR 0020)
        return
    if message.topic == EVENTS_TOPIC:
        try:
            body = orjson.loads(value)
        except (orjson.JSONDecodeError, TypeError) as exc:  # TypeError: no value (a tombstone)
            await dead_letter(message, f"invalid JSON: {exc}")
            return
        decoded_project = await _decode(message, body)
        if decoded_project is None:
            return
        decoded, project = decoded_project
        key = decoded.table_key.encode()
        if partition_for(key, settings.partitions) != message.partition:
            # Produced to the wrong partition: hand it to the partition that owns the lead.
            await forward_event(key, decoded.to_wire(), logged_at)
            return
    else:  # lead-commands: the record key names the lead it is for
        try:
            command = wire.decode_command(value, settings.app_version)
        except wire.WireError as exc:
            await dead_letter(message, str(exc))  # names the field
            return
        if command is None:
            return  # from an earlier epoch: a replay re-derives it from the events topic
        if not isinstance(command, wire.EventCommand):
            owner = directory.get(command.project_id)
            if owner is None:
                await dead_letter(message, "command for an unknown project")
                return
            if isinstance(command, wire.Erase):
                await handle_erase(message.key, command, message.partition)  # ADR 0020
                return
            await handle_command(
                Command(message.key, command, owner, message.partition, message.offset, now_us())
            )
            return
        decoded_project = await _decode(message, orjson.loads(memoryview(command.event)))
        if decoded_project is None:
            return
        decoded, project = decoded_project
        key = message.key
        if command.logged_at is not None:
            logged_at = command.logged_at  # the original record's
    if erasures.drops(decoded.project_id, key.decode().split(":", 1)[1], logged_at):
        metrics.event_scored("erased")  # logged before its key's erasure (ADR 0020)
        return
    state = lead_store.get(key)
    if isinstance(state, Alias):
        await forward_event(
            f"{decoded.project_id}:{state.canonical}".encode(), decoded.to_wire(), logged_at
        )
        return
    source = (0 if message.topic == EVENTS_TOPIC else COMMANDS_SOURCE, message.offset)
    result = score_event(decoded, project, key, message.partition, now_us(), source, logged_at)
    metrics.event_scored("duplicate" if result is None else "scored")
    if result is not None:
        changes, claim, firings = result
        faults.inject("produce")  # tests: a produce timeout after the tables were written
        for change in changes:
            await lead_changes_topic.send(key=key, value=change)
        await send_firings(firings)
        if claim is not None:
            await send_claim(claim)
