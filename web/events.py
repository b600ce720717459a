"""Ingest: validate per SPEC 2, produce to the events topic, answer 202 once the broker acked.

Kafka not acknowledging within LEADSCORE_PRODUCE_TIMEOUT is a 503 with Retry-After, never a
hang. A 503 does not prove the events were not written (the send may still complete), so a
client retries with the same eventIds or the same `Idempotency-Key`, and counts them once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiokafka.errors import KafkaError
from faust.web import Request, Response

from app.batch_send import send_in_batches
from app.clock import now_us
from app.faust_patches import aiokafka_producer
from app.partitioning import partition_for
from app.records import ProjectRecord
from app.settings import settings
from app.topology import app, events_topic
from core.events import Event, FieldError, InvalidEvent, idempotent_event_id, validate_event
from core.storable import is_utf8
from web.base import ApiError, ApiView

__all__ = ["BatchIngestView", "EventIngestView", "SdkIngestView"]

MAX_BATCH_EVENTS = 1_000
MAX_BATCH_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 128
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_AFTER_SECONDS = 5

log = logging.getLogger(__name__)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not is_utf8(key):
        raise ApiError(
            400,
            "invalid header",
            [FieldError(IDEMPOTENCY_HEADER, f"1-{MAX_IDEMPOTENCY_KEY_CHARS} characters of UTF-8")],
        )
    return key


def _validate(
    data: Any,
    project: ProjectRecord,
    now: int,
    received: int | None = None,
    idempotency_key: str | None = None,
    index: int | None = None,
) -> Event:
    new_id = (
        idempotent_event_id(project.projectId, idempotency_key, index)
        if idempotency_key is not None
        else str(uuid.uuid4())
    )
    return validate_event(
        data,
        now=now,
        project_id=project.projectId,  # never the body's: it comes from the API key
        default_timestamp=now if received is None else received,
        new_event_id=new_id,
    )


async def _produce(events: list[Event]) -> None:
    """acks=all: durable before we say "queued"; Kafka silent for too long is a 503."""
    keyed = ((e.table_key.encode(), e.to_wire()) for e in events)
    records = [(partition_for(key, settings.partitions), key, value) for key, value in keyed]
    try:
        await asyncio.wait_for(
            send_in_batches(
                aiokafka_producer(app),
                events_topic.get_topic_name(),
                records,
            ),
            settings.produce_timeout,
        )
    except (TimeoutError, KafkaError) as exc:
        log.warning("ingest: Kafka did not acknowledge %d events: %r", len(records), exc)
        raise ApiError(
            503,
            "Kafka unavailable; retry with the same eventIds or Idempotency-Key",
            extra={"dependency": "kafka"},
            retry_after=RETRY_AFTER_SECONDS,
        ) from None


async def _queue_one(
    view: ApiView, request: Request, body: Any, project: ProjectRecord
) -> Response:
    """Validate one event, produce it, answer 202 with its eventId."""
    try:
        event = _validate(body, project, now_us(), idempotency_key=_idempotency_key(request))
    except InvalidEvent as exc:
        raise ApiError(422, "invalid event", exc.errors) from None
    await _produce([event])
    return view.reply({"status": "queued", "eventId": event.event_id}, status=202)


@app.page("/api/events")
class EventIngestView(ApiView):
    async def post(self, request: Request) -> Response:
        project = await self.project(request, need="ingest")
        body = await self.json_body(request, max_bytes=MAX_EVENT_BYTES)
        return await _queue_one(self, request, body, project)


@app.page("/api/events/batch")
class BatchIngestView(ApiView):
    async def post(self, request: Request) -> Response:
        project = await self.project(request, need="ingest")
        body = await self.json_body(request, max_bytes=MAX_BATCH_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise ApiError(422, "invalid batch", [FieldError("events", "must be a list")])
        raw_events = body["events"]
        if len(raw_events) > MAX_BATCH_EVENTS:
            raise ApiError(413, f"a batch holds at most {MAX_BATCH_EVENTS} events")
        if not raw_events:
            raise ApiError(422, "invalid batch", [FieldError("events", "must not be empty")])
        now = now_us()
        idempotency_key = _idempotency_key(request)
        events: list[Event] = []
        invalid: list[dict[str, Any]] = []
        for index, data in enumerate(raw_events):
            try:
                # events without a timestamp get the receive time, one microsecond apart in
                # batch order: they keep their order and are appended, not inserted mid-chain
                events.append(
                    _validate(data, project, now, now + index, idempotency_key, index)
                )
            except InvalidEvent as exc:
                invalid.append({"index": index, "fields": [e.as_json() for e in exc.errors]})
        if invalid:  # all or nothing: a batch with any invalid event is rejected whole
            raise ApiError(422, "invalid events in batch", extra={"invalid": invalid})
        await _produce(events)
        return self.reply(
            {"status": "queued", "count": len(events), "eventIds": [e.event_id for e in events]},
            status=202,
        )


@app.page("/api/ingest/event")
class SdkIngestView(ApiView):
    """The browser SDK's route: the API key travels in the body, `event` names the type."""

    async def post(self, request: Request) -> Response:
        body = await self.json_body(request, max_bytes=MAX_EVENT_BYTES)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid event", [FieldError("body", "must be a JSON object")])
        api_key = body.get("apiKey")  # else the headers' credentials, as on every route
        if not isinstance(api_key, str) or not api_key:
            api_key = None
        project = await self.project(request, api_key=api_key, field="apiKey", need="ingest")
        return await _queue_one(self, request, body, project)
