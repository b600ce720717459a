"""The scoring agent: decode → dedup → core → tables → emit a LeadChange (one hop per event)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from faust.types import EventT, StreamT

from app.partitioning import partition_for
from app.records import ProjectRecord, lead_change
from app.settings import settings
from app.topology import (
    app,
    commands_topic,
    dead_letter_topic,
    directory,
    lead_changes_topic,
    scoring_source,
)
from core.events import Event, FieldError, InvalidEvent, validate_event
from core.lead import LeadSummary, NewEvent, apply_event, lead_view
from core.scoring import VELOCITY_WINDOW_US
from tables.codec import Alias
from tables.leads import lead_store

__all__ = ["dead_letter", "score_event", "scoring_agent"]

log = logging.getLogger(__name__)
EVENTS_TOPIC = settings.topic("events")


def now_us() -> int:
    return time.time_ns() // 1_000


async def dead_letter(message: Any, reason: str, errors: list[FieldError] | None = None) -> None:
    """Park a record that cannot be scored, with why, so nothing is lost and the worker goes on."""
    value = message.value
    await dead_letter_topic.send(
        key=message.key,
        value=orjson.dumps(
            {
                "reason": reason,
                "errors": [e.as_json() for e in errors or []],
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "key": message.key.decode(errors="replace") if message.key else None,
                "value": value.decode(errors="replace") if isinstance(value, bytes) else None,
                "deadLetteredAt": time.time(),
            }
        ),
    )


async def _decode(event: EventT) -> tuple[Event, ProjectRecord] | None:
    message = event.message
    try:
        data = orjson.loads(event.value)
    except orjson.JSONDecodeError as exc:
        await dead_letter(message, f"invalid JSON: {exc}")
        return None
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
    decoded: Event, project: ProjectRecord, key: bytes, partition: int, now: int
) -> bytes | None:
    """Apply one event to its lead's tables; the LeadChange to emit, or None for a duplicate."""
    store = lead_store
    if store.has_event(key, decoded.event_id):
        return None
    state = store.get(key)
    summary = (
        state
        if isinstance(state, LeadSummary)
        else LeadSummary(decoded.project_id, decoded.lead_key)
    )
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
        applied = apply_event(
            summary,
            new,
            config,
            properties=decoded.properties,
            predecessor=store.predecessor(key, partition, new.timestamp, new.event_id),
            successors=store.facts_from(key, partition, new.timestamp, new.event_id),
        )
    store.record_event(key, decoded.event_id, decoded.timestamp, decoded.properties)
    for fact in applied.facts:
        store.put_fact(key, fact)
    store.put_summary(key, applied.summary)
    recent = store.count_in_window(key, partition, now - VELOCITY_WINDOW_US, now)
    view = lead_view(applied.summary, now, config, recent)
    return lead_change("upsert", view, applied.rows, epoch=settings.app_version)


@app.agent(scoring_source)
async def scoring_agent(stream: StreamT[bytes]) -> None:
    await directory.wait_loaded()
    partitions = settings.partitions
    async for event in stream.events():
        message = event.message
        try:
            decoded_project = await _decode(event)
            if decoded_project is None:
                continue
            decoded, project = decoded_project
            key = decoded.table_key.encode()
            if (
                message.topic == EVENTS_TOPIC
                and partition_for(key, partitions) != message.partition
            ):
                # Produced to the wrong partition: re-key it onto the partition that owns the lead.
                await commands_topic.send(key=key, value=decoded.to_wire())
                continue
            state = lead_store.get(key)
            if isinstance(state, Alias):
                await commands_topic.send(key=state.canonical.encode(), value=decoded.to_wire())
                continue
            change = score_event(decoded, project, key, message.partition, now_us())
            if change is not None:
                await lead_changes_topic.send(key=key, value=change)
        except Exception as exc:  # a record must never stop its partition
            log.exception(
                "scoring failed for %s:%s@%s", message.topic, message.partition, message.offset
            )
            await dead_letter(message, f"internal error: {exc!r}")
