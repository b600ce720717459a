"""Live lead changes for the dashboard and integrations: one feed per worker, fanned out.

Every worker reads the lead-changes topic from its end with a consumer of its own (no consumer
group: each worker sees every partition, and the scoring group is not rebalanced by it). Each
change becomes a small notice — a new lead, a stage change or a score move — handed to the
subscribers of the lead's project through bounded queues. A subscriber whose queue is full is
dropped (its stream ends; the browser's EventSource reconnects and reloads): one slow reader never
holds up the feed or the others.

The previous stage of a lead is remembered in a bounded LRU map, so a stage change is told apart
from a score move without reading MongoDB; a lead not seen since the worker started is reported
as a score move with its current stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["LiveFeed", "Subscription", "notice_of"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
"""Notices a subscriber may have unread before it is dropped."""
REMEMBERED_LEADS = 100_000
"""Leads whose last stage is remembered (a few MB) to tell stage changes from score moves."""


@dataclass(eq=False)  # compared and hashed by identity: each is one reader
class Subscription:
    """One reader of one project's notices; `dropped` once it fell too far behind."""

    project_id: str
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    dropped: bool = False


def notice_of(change: Any, previous_stage: str | None) -> dict[str, Any] | None:
    """The notice of one LeadChange record (pure): None for removals and unreadable records."""
    if not isinstance(change, dict) or change.get("kind") not in ("upsert", "refresh"):
        return None
    lead = change.get("lead")
    if not isinstance(lead, dict) or not isinstance(lead.get("projectId"), str):
        return None
    stage = lead.get("leadStage")
    if change["kind"] == "upsert" and lead.get("eventCount") == 1 and previous_stage is None:
        kind = "lead.created"
    elif previous_stage is not None and previous_stage != stage:
        kind = "lead.stage_changed"
    else:
        kind = "lead.score_changed"
    history = change.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    return {
        "type": kind,
        "projectId": lead["projectId"],
        "leadId": lead.get("leadId"),
        "email": lead.get("email"),
        "currentScore": lead.get("currentScore"),
        "leadStage": stage,
        "previousStage": previous_stage,
        "eventCount": lead.get("eventCount"),
        "lastEventAt": lead.get("lastEventAt"),
        "event": {k: last.get(k) for k in ("eventId", "eventType", "points", "timestamp")}
        if last
        else None,
    }


class LiveFeed:
    """Subscribers per project, fed by `publish`; `run` reads the topic into it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._stages: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.dropped = 0

    def subscribe(self, project_id: str) -> Subscription:
        sub = Subscription(project_id)
        self._subscribers.setdefault(project_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.project_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.project_id]

    def subscribers(self, project_id: str) -> int:
        return len(self._subscribers.get(project_id, ()))

    def publish(self, raw: bytes, key: bytes | None = None) -> None:
        """One record of the lead-changes topic: remember its stage, tell its project.

        With the record `key` ("{projectId}:{leadId}"), a change of a project nobody watches
        is not even parsed (every worker reads every change): its remembered stage is
        forgotten instead, so a later watcher is never told a stale stage change."""
        if key is not None:
            project_id, _, lead_id = key.decode(errors="replace").partition(":")
            if project_id not in self._subscribers:
                if self._stages:
                    self._stages.pop((project_id, lead_id), None)
                return
        try:
            change = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        lead = change.get("lead") if isinstance(change, dict) else None
        if not isinstance(lead, dict):
            return
        ident = (str(lead.get("projectId")), str(lead.get("leadId")))
        previous = self._stages.get(ident)
        notice = notice_of(change, previous)
        if notice is None:
            self._stages.pop(ident, None)
            return
        self._stages[ident] = str(notice["leadStage"])
        self._stages.move_to_end(ident)
        while len(self._stages) > REMEMBERED_LEADS:
            self._stages.popitem(last=False)
        for sub in list(self._subscribers.get(ident[0], ())):
            try:
                sub.queue.put_nowait(notice)
            except asyncio.QueueFull:
                sub.dropped = True
                self.dropped += 1
                self.unsubscribe(sub)

    async def run(self, bootstrap_servers: str, topic: str, ready: asyncio.Event) -> None:
        """Read `topic` from its end until cancelled; `ready` once positioned at the end.

        After a broker error it reconnects from the end again: changes made meanwhile are not
        told (a live view, not a log; the pages reload their data on every notice)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False
            )
            try:
                await consumer.start()
                partitions = await _partitions(consumer, topic)
                tps = [TopicPartition(topic, p) for p in partitions]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)  # resolve "end" now, not at the first fetch
                ready.set()
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                    for records in batches.values():
                        for record in records:
                            if record.value is not None:
                                self.publish(record.value, record.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed is best effort: reconnect, never stop the worker
                log.warning("live feed: %r; reconnecting", exc)
                await asyncio.sleep(2.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> list[int]:
    """The topic's partitions, waiting for the topic to exist (a fresh deployment)."""
    for _ in range(60):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        # the client's own metadata, refreshed now (its public `topics()` fetches a copy that
        # `partitions_for_topic` does not read); aiokafka is pinned below 0.15 in pyproject
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.5)
    raise RuntimeError(f"topic {topic} has no partitions")
