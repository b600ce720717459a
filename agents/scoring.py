"""The scoring agent: batches of records → leads applied in memory → one commit per batch.

A batch is what Faust's `take_events` hands over: up to `LEADSCORE_SCORING_BATCH` records of
the events and lead-commands topics, or fewer after `LEADSCORE_SCORING_WAIT` seconds. Its
events are grouped by lead; each lead is read once, its events applied in arrival order
(`tables.lead_batch.LeadBatch`), and written once; every lead emits one LeadChange per batch.
A lead command (merge, absorb, rebuild, ...) is a boundary: the leads before it are applied
first, so the command sees them. At the end, `LeadStore.commit` makes the batch's table writes
durable (changelog acknowledged, then RocksDB) while the LeadChanges are produced; the batch's
offsets are committed by Faust only after that returns.

Crash safety is the per-record rule of the table layer, per batch: a batch redone after a crash
finds each lead's summary stamped with the offsets it applied (those records only re-emit
their outputs) and its own dedup rows for the rest (those are applied again, exactly as the
first time). A temporary fault redoes the whole batch; a permanent one (a bug) redoes it record
by record, so only the record that fails is dead-lettered (ADR 0015).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import orjson
from faust.types import StreamT

from agents.automation import FiringRecord, candidates, fired, send_firings
from agents.erasure import erasures, handle_erase
from agents.lead_commands import COMMANDS_SOURCE, Command, handle_command, history_rows
from agents.outbox import forward_event, send_claim
from app import faults, metrics, wire
from app.batch_send import send_in_batches
from app.clock import now_us
from app.fast_decode import fast_event
from app.faults import dead_letter, isolate, retry_temporary
from app.faust_patches import aiokafka_producer
from app.partitioning import partition_for
from app.records import OutgoingChange, ProjectRecord, lead_changes
from app.settings import settings
from app.topology import app, directory, scoring_source
from core.automation import (
    Cause,
    LeadMoment,
    fired_at,
    floor_before,
    moment_after,
    moment_before,
)
from core.events import Event, FieldError, InvalidEvent, validate_event
from core.identity import claims, normalize_email
from core.lead import HistoryRow, LeadSummary, LeadView
from core.scoring import report, stage_for, velocity_score
from tables.codec import Alias, Source
from tables.lead_batch import LeadBatch
from tables.leads import lead_store

__all__ = ["score_batch", "scoring_agent"]

log = logging.getLogger(__name__)
EVENTS_TOPIC = settings.topic("events")
LEAD_CHANGES_TOPIC = settings.topic("lead-changes")


@dataclass(slots=True)
class _Item:
    """A valid event for a lead of this worker's partition, and where it came from."""

    event: Event
    project: ProjectRecord
    source: Source
    logged_at: int  # when its record entered the log (µs): identity ranks claims by it
    partition: int


@dataclass(slots=True)
class _LeadWork:
    """One lead's part of a batch: what applying its new events (or a prefix of them) needs."""

    key: bytes
    partition: int
    base: LeadSummary  # as stored, or a fresh summary for a new lead
    stored: LeadSummary | None
    project: ProjectRecord
    fresh: list[_Item]  # its new events, deduplicated, in arrival order
    redone: set[str]  # eventIds applied in part before a crash
    now: int


@dataclass
class _Outputs:
    """What a batch sends once its table writes are made durable."""

    changes: list[OutgoingChange] = field(default_factory=list)  # lead commands' too
    claims: list[wire.Claim] = field(default_factory=list)
    firings: list[FiringRecord] = field(default_factory=list)
    forwards: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


@app.agent(scoring_source)
async def scoring_agent(stream: StreamT[bytes]) -> None:
    """Thin: take a batch, score it."""
    await directory.wait_loaded()
    await erasures.wait_loaded()  # before any event: erased keys' events are dropped
    batches = cast(Any, stream).take_events(settings.scoring_batch, settings.scoring_wait)
    async for events in batches:
        await score_batch([event.message for event in events])


async def score_batch(messages: list[Any]) -> None:
    """Score one batch; no record may stop its partition, nor be skipped over a temporary
    fault (ADR 0015)."""
    started = time.perf_counter()
    for source, n in _sources(messages).items():
        metrics.event_consumed(source, n)
    try:
        outputs = await retry_temporary("scoring", partial(_apply, messages))
    except Exception:
        log.exception(
            "scoring: a batch of %d records failed; redone record by record", len(messages)
        )
        outputs = _Outputs()
        for message in messages:
            await isolate("scoring", message, partial(_apply_one, message, outputs))
    for outcome, n in outputs.outcomes.items():
        metrics.event_scored(outcome, n)
    metrics.records_processed(time.perf_counter() - started, len(messages))


async def _apply_one(message: Any, outputs: _Outputs) -> None:
    done = await _apply([message])
    for outcome, n in done.outcomes.items():
        outputs.count(outcome, n)


def _sources(messages: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        source = "events" if message.topic == EVENTS_TOPIC else "lead-commands"
        counts[source] = counts.get(source, 0) + 1
    return counts


async def _apply(messages: list[Any]) -> _Outputs:
    """Apply the batch to the tables, commit it, then send its outputs."""
    lead_store.discard()  # a failed attempt's writes: redone from the records
    now = now_us()
    outputs = _Outputs()
    leads: dict[bytes, list[_Item]] = {}
    for message in messages:
        item = await _route(message, now, outputs)
        if isinstance(item, _Item):
            leads.setdefault(f"{item.event.project_id}:{item.event.lead_key}".encode(), []).append(
                item
            )
        elif item is not None:  # a lead command: the leads before it first
            _score_leads(leads, now, outputs)
            leads = {}
            await item
    _score_leads(leads, now, outputs)
    # Firing candidates before the summaries that count their events: a crash in between
    # leaves the records unapplied, so the redo sends them again (the firing agent keeps the
    # first of an id); sent after, a crash could lose them (a redo of an applied record only
    # re-emits its LeadChange and claim).
    await send_firings(outputs.firings)
    faults.inject("produce")  # tests: a produce timeout after the table writes
    await asyncio.gather(
        lead_store.commit(),
        send_in_batches(aiokafka_producer(app), LEAD_CHANGES_TOPIC, outputs.changes),
    )
    for key, raw_event, logged_at in outputs.forwards:
        await forward_event(key, raw_event, logged_at)
    for claim in outputs.claims:
        await send_claim(claim)
    return outputs


async def _route(message: Any, now: int, outputs: _Outputs) -> _Item | Awaitable[None] | None:
    """An event for a lead of this partition, a lead command to run (an awaitable), or None
    (dead-lettered, forwarded, erased or of an earlier epoch)."""
    logged_at = round(message.timestamp * 1000) * 1000  # the record's Kafka timestamp, in µs
    if message.topic == EVENTS_TOPIC:
        if erasures.drops_record(message.key, logged_at):
            outputs.count("erased")  # not even dead-lettered: its key was erased (ADR 0020)
            return None
        try:
            body = orjson.loads(message.value)
        except (orjson.JSONDecodeError, TypeError) as exc:  # TypeError: no value (a tombstone)
            await dead_letter(message, f"invalid JSON: {exc}")
            return None
        decoded = await _decode(message, body, now, logged_at)
        if decoded is None:
            return None
        event, project = decoded
        key = event.table_key.encode()
        if partition_for(key, settings.partitions) != message.partition:
            # Produced to the wrong partition: hand it to the partition that owns the lead.
            outputs.forwards.append((key, event.to_wire(), logged_at))
            return None
        source: Source = (0, message.offset)
    else:  # lead-commands: the record key names the lead it is for
        try:
            command = wire.decode_command(message.value, settings.app_version)
        except wire.WireError as exc:
            await dead_letter(message, str(exc))  # names the field
            return None
        if command is None:
            return None  # from an earlier epoch: a replay re-derives it from the events topic
        if not isinstance(command, wire.EventCommand):
            owner = directory.get(command.project_id)
            if owner is None:
                await dead_letter(message, "command for an unknown project")
                return None
            if isinstance(command, wire.Erase):
                # ADR 0020
                return handle_erase(message.key, command, message.partition, outputs.changes)
            return handle_command(
                Command(
                    message.key,
                    command,
                    owner,
                    message.partition,
                    message.offset,
                    now_us(),
                    outputs.changes,
                )
            )
        try:
            body = orjson.loads(memoryview(command.event))
        except orjson.JSONDecodeError as exc:
            await dead_letter(message, f"invalid JSON: {exc}")
            return None
        decoded = await _decode(message, body, now, logged_at)
        if decoded is None:
            return None
        event, project = decoded
        key = message.key
        if command.logged_at is not None:
            logged_at = command.logged_at  # the original record's
        source = (COMMANDS_SOURCE, message.offset)
        if key != event.table_key.encode():
            # an alias's event, forwarded to its canonical lead: scored under the record key
            event = _rekeyed(event, key)
    if erasures.drops(event.project_id, event.lead_key, logged_at):
        outputs.count("erased")  # logged before its key's erasure (ADR 0020)
        return None
    return _Item(event, project, source, logged_at, message.partition)


def _rekeyed(event: Event, key: bytes) -> Event:
    """The event as its canonical lead's: grouped and scored under the lead's own key."""
    lead = key.decode().split(":", 1)[1]
    return Event(
        project_id=event.project_id,
        event_id=event.event_id,
        event_type=event.event_type,
        timestamp=event.timestamp,
        lead_id=lead,
        anonymous_id=event.anonymous_id,
        properties=event.properties,
    )


async def _decode(
    message: Any, data: Any, now: int, logged_at: int
) -> tuple[Event, ProjectRecord] | None:
    """A valid event and its project, or None after dead-lettering the record with the reason."""
    event = fast_event(data, now=now, default_timestamp=logged_at)
    if event is None:
        try:
            event = validate_event(
                data, now=now, default_timestamp=logged_at, require_event_id=True
            )
        except InvalidEvent as exc:
            await dead_letter(message, "invalid event", exc.errors)
            return None
    project = directory.get(event.project_id)
    if project is None:
        await directory.sync()  # it may have been created a moment ago on another worker
        project = directory.get(event.project_id)
    if project is None:
        await dead_letter(message, "unknown project", [FieldError("projectId", "unknown project")])
        return None
    return event, project


def _score_leads(leads: dict[bytes, list[_Item]], now: int, outputs: _Outputs) -> None:
    for key, items in leads.items():
        _score_lead(key, items, now, outputs)


def _score_lead(key: bytes, items: list[_Item], now: int, outputs: _Outputs) -> None:
    """Apply one lead's events of the batch and write it once (into the unit of work)."""
    partition = items[0].partition
    state = lead_store.get(key, partition)
    if isinstance(state, Alias):
        canonical = f"{items[0].event.project_id}:{state.canonical}".encode()
        for item in items:  # merged meanwhile: its events count for the lead that absorbed it
            outputs.forwards.append((canonical, item.event.to_wire(), item.logged_at))
        return
    project = items[-1].project
    stored = state if isinstance(state, LeadSummary) else None
    again: list[_Item] = []
    fresh: list[_Item] = []
    redone: set[str] = set()
    seen: set[str] = set()
    for item in items:
        if stored is not None and stored.applied[item.source[0]] >= item.source[1]:
            again.append(item)  # applied before a crash, which lost only its outputs
            continue
        event_id = item.event.event_id
        known, added_by = (
            (True, None) if event_id in seen else lead_store.event_source(key, event_id, partition)
        )
        if known and added_by != item.source:
            outputs.count("duplicate")
            continue
        if known:
            redone.add(event_id)  # this very record, applied in part before a crash
        seen.add(event_id)
        fresh.append(item)
    rows: dict[str, HistoryRow] = {}
    for item in again:
        assert stored is not None
        _outputs_again(key, item, stored, rows, outputs)
    if not fresh:
        if stored is not None and again:
            _emit(key, partition, _stored_view(key, partition, stored, project, now), rows, outputs)
        return
    base = stored or LeadSummary(project.projectId, key.decode().split(":", 1)[1])
    work = _LeadWork(key, partition, base, stored, project, fresh, redone, now)
    lead, claims = _apply_lead(work, len(fresh))
    summary = lead.summary()
    view = lead.view(summary)
    if project.active_automations:
        outputs.firings += _firings(work, lead, view)
    outputs.claims += claims
    outputs.count("scored", len(fresh))
    lead.write(lead_store, summary, [_dedup_row(item) for item in fresh])
    rows.update(lead.rows)
    _emit(key, partition, view, rows, outputs)


def _apply_lead(work: _LeadWork, upto: int) -> tuple[LeadBatch, list[wire.Claim]]:
    """The lead with its first `upto` new events of the batch added (chained in one pass), and
    the claims its identifies make."""
    lead = LeadBatch(
        lead_store,
        work.key,
        work.partition,
        work.base,
        work.project.scoring,
        work.now,
        redone=frozenset(work.redone),
        known=work.stored is not None,
    )
    claims: list[wire.Claim] = []
    for item in work.fresh[:upto]:
        event = item.event
        lead.add(
            event.timestamp,
            event.event_id,
            event.event_type,
            event.properties,
            event.anonymous_id,
            item.source,
        )
        if event.event_type == "identify":
            claim = _claim_if_first(lead, item)
            if claim is not None:
                claims.append(claim)
    return lead, claims


def _firings(work: _LeadWork, lead: LeadBatch, view: LeadView) -> list[FiringRecord]:
    """SPEC 9 evaluates triggers at every event's change, in arrival order. `fired_at` asks only
    for the moments it needs: the batch's two ends (known: the stored lead and `view`), and a
    few in between when a rule crosses or an `event` trigger meets its type, which
    `LeadBatch.prefixes` folds from the stored chain. Only where a rule fires is the lead after
    the first k events applied again from `base` (exact, read-only), for the firing's record."""
    project, fresh, now = work.project, work.fresh, work.now
    config = project.scoring
    lead_id = view.summary.lead_id
    if len(fresh) == 1:  # the most common case: one event, whose change is the batch's
        event = fresh[0].event
        cause = Cause(event.event_id, event.timestamp, event.event_type)
        return candidates(project, work.stored, view, now, cause)
    views = {len(fresh): view}
    moments = {0: moment_before(work.stored, config, now), len(fresh): moment_after(view)}
    prefixes: list[Callable[[int], tuple[float, int]]] = []  # made on first use (reads facts)

    def view_at(k: int) -> LeadView:
        if k not in views:
            views[k] = _apply_lead(work, k)[0].view()
        return views[k]

    def moment_at(k: int) -> LeadMoment:
        if k not in moments:
            if work.redone:
                moments[k] = moment_after(view_at(k))
            else:
                if not prefixes:
                    prefixes.append(lead.prefixes())
                score, window = prefixes[0](k)
                moments[k] = LeadMoment(
                    report(score), stage_for(score, config.thresholds), velocity_score(window)
                )
        return moments[k]

    types = [item.event.event_type for item in fresh]
    points = config.points_for
    negative = [k for k, event_type in enumerate(types, 1) if points(event_type) < 0]
    drop = sum(points(types[k - 1]) for k in negative)
    out: list[FiringRecord] = []
    for k, rules in fired_at(
        project.active_automations,
        types,
        [item.event.timestamp for item in fresh],
        moment_at,
        negative=negative,
        floor=floor_before(work.stored, config, now, drop) if negative else None,
    ):
        event = fresh[k - 1].event
        cause = Cause(event.event_id, event.timestamp, event.event_type)
        out += fired(project, lead_id, partial(view_at, k), rules, cause, now)
    return out


def _dedup_row(item: _Item) -> tuple[str, int, Any, Source]:
    event = item.event
    return (event.event_id, event.timestamp, event.properties, item.source)


def _claim_if_first(lead: LeadBatch, item: _Item) -> wire.Claim | None:
    """One claim at a time, the earliest identify's: its reply decides what the lead becomes."""
    event = item.event
    email = normalize_email((event.properties or {}).get("email"))
    order = (item.logged_at, event.event_id)
    if email and claims(lead.summary(), order):
        lead.pending_email, lead.pending_claim = email, order
        return _claim(event, email, item.logged_at)
    return None


def _claim(event: Event, email: str, logged_at: int) -> wire.Claim:
    """A claim, ranked by when the identify entered the log (its record's Kafka timestamp):
    the first to claim an email owns it (SPEC 5), and a replay ranks it the same way."""
    props = event.properties or {}
    return wire.Claim(
        project_id=event.project_id,
        email=email,
        claimant=event.lead_key,
        event_id=event.event_id,
        timestamp=logged_at,
        name=props.get("name"),
        company=props.get("company"),
    )


def _outputs_again(
    key: bytes, item: _Item, stored: LeadSummary, rows: dict[str, HistoryRow], outputs: _Outputs
) -> None:
    """The rows (from the event on) and claim an applied record emitted. Its firings, if any,
    were produced before its table writes (`_apply`), so they are not sent again."""
    event = item.event
    for row in history_rows(key, item.partition, event.timestamp, event.event_id, item.project):
        rows[row.event_id] = row
    email = normalize_email((event.properties or {}).get("email"))
    if (
        event.event_type == "identify"
        and email
        and stored.pending_email == email
        and stored.pending_claim in (None, (item.logged_at, event.event_id))
    ):
        outputs.claims.append(_claim(event, email, item.logged_at))  # the claim it made


def _stored_view(
    key: bytes, partition: int, stored: LeadSummary, project: ProjectRecord, now: int
) -> LeadView:
    return lead_store.view_at(key, partition, stored, project.scoring, now)


def _emit(
    key: bytes, partition: int, view: LeadView, rows: dict[str, HistoryRow], outputs: _Outputs
) -> None:
    """The lead's LeadChange of this batch, in parts under the message size limit."""
    for change in lead_changes(
        "upsert",
        view,
        rows.values(),
        epoch=settings.app_version,
        max_bytes=settings.max_message_bytes,
    ):
        outputs.changes.append((partition, key, change))
