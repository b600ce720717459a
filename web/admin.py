"""Admin routes of a project: rebuild one lead, rescore all, and a worker's table state
(for the invariant report, web/system_health.py)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.web import Request, Response

from agents.outbox import send_command
from app import wire
from app.settings import settings
from app.topology import app
from core.lead import LeadSummary
from tables.leads import lead_store, leads_table
from web.base import ApiError, ApiView, path_param, query_int, query_str
from web.metrics import consumer_lag

__all__ = ["HeavyRouteGate", "RebuildView", "RescoreView", "TableLeadsView", "heavy"]
BUSY_RETRY_AFTER_SECONDS = 2


class HeavyRouteGate:
    """At most `slots` heavy admin requests in flight in this process; the next one is told to
    come back (429 + Retry-After) instead of queueing, so a burst of cheap requests cannot make
    a worker rescan whole projects many times over (issue 10 finding 7)."""

    def __init__(self, slots: int) -> None:
        self._free = max(1, slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self._free <= 0:  # one event loop per process: no lock needed
            raise ApiError(
                429,
                "too many admin requests in progress on this worker; retry",
                retry_after=BUSY_RETRY_AFTER_SECONDS,
            )
        self._free -= 1
        try:
            yield
        finally:
            self._free += 1


heavy = HeavyRouteGate(settings.admin_concurrency)


@app.page("/api/admin/rebuild/{lead_id}")
class RebuildView(ApiView):
    async def post(self, request: Request, lead_id: str) -> Response:
        project = await self.project(request, need="admin")
        key = f"{project.projectId}:{path_param(lead_id, 'leadId')}".encode()
        with heavy.slot():
            await send_command(key, wire.Rebuild(project_id=project.projectId))
        return self.reply({"status": "queued", "leadId": lead_id}, status=202)


@app.page("/api/admin/rescore")
class RescoreView(ApiView):
    """Recompute every lead of the project under its current rules, on the owning workers."""

    async def post(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        body = wire.RescoreProject(project_id=project.projectId)
        with heavy.slot():
            for partition in range(settings.partitions):
                await send_command(f"{project.projectId}:*".encode(), body, partition=partition)
        return self.reply(
            {"status": "queued", "projectId": project.projectId, "partitions": settings.partitions},
            status=202,
        )


@app.page("/api/internal/table-leads")
class TableLeadsView(ApiView):
    """This worker's table state of the caller's project (its active partitions only).

    With `limit` (web/system_health.py): one page, `{entries: [{key, lead | alias}], next,
    lag}` in key order from the key after `after`, and the lag of this worker's events
    partitions from its metrics. Without: the whole project at once (small projects, tools).
    """

    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        topic = leads_table.changelog_topic.get_topic_name()
        partitions = sorted(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic
        )
        if request.query.get("limit") is not None:
            limit = query_int(request, "limit", 1000, 1, 10_000)
            after = query_str(request, "after")
            return self.reply(_page(project.projectId, partitions, after, limit))
        leads: dict[str, Any] = {}
        aliases: dict[str, str] = {}
        for partition in partitions:
            for _key, state in lead_store.leads_of_project(project.projectId, partition):
                leads[state.lead_id] = _table_fields(state)
            for alias_key, alias in lead_store.aliases_of_project(project.projectId, partition):
                aliases[alias_key] = alias.canonical
        return self.reply({"leads": leads, "aliases": aliases})


def _table_fields(state: LeadSummary) -> dict[str, Any]:
    return {
        "eventCount": state.event_count,
        "email": state.email,
        "scoreAtLastEvent": state.score,
        "version": state.version,
    }


def _page(project_id: str, partitions: list[int], after: str | None, limit: int) -> dict[str, Any]:
    streams = [
        (
            (key.decode().split(":", 1)[1], state)
            for key, state in lead_store.states_of_project(project_id, partition, after)
        )
        for partition in partitions
    ]
    entries: list[dict[str, Any]] = []
    for lead_key, state in heapq.merge(*streams, key=lambda item: item[0]):
        if len(entries) == limit:
            break
        if isinstance(state, LeadSummary):
            entries.append({"key": lead_key, "lead": _table_fields(state)})
        else:
            entries.append({"key": lead_key, "alias": state.canonical})
    lag = {str(p): n for t, p, n in consumer_lag() if t == "events"}
    return {
        "entries": entries,
        "next": entries[-1]["key"] if len(entries) == limit else None,
        "lag": lag,
    }
