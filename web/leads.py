"""Lead reads: one lead from the table of the worker that owns it; lists from MongoDB."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from faust.web import Request, Response
from yarl import URL

from app.access import Permission
from app.clock import now_us
from app.partitioning import partition_for
from app.records import ProjectRecord, lead_json
from app.settings import settings
from app.topology import app, mongo
from core.events import FieldError
from core.intelligence import assess
from core.lead import LeadSummary, lead_view
from core.scoring import VELOCITY_WINDOW_US
from core.timeutil import format_timestamp
from store import queries
from tables.codec import Alias
from tables.leads import lead_store, leads_table
from web.base import ApiError, ApiView, path_param, query_int, query_str

__all__ = [
    "IntelligenceView",
    "LeadView",
    "LeaderboardByStageView",
    "LeaderboardView",
    "LeadsView",
    "TimelineView",
]

TIMELINE_PAGE = 500
"""Rows of a timeline page unless `limit` says otherwise; `limit` is at most TIMELINE_MAX_PAGE."""
TIMELINE_MAX_PAGE = 1000
MAX_OFFSET = 1_000_000
"""Deepest `offset` of any paged route: MongoDB walks every skipped row."""

STAGES = ("qualified", "hot", "warm", "cold")


ROUTED_HEADER = "X-Leadscore-Routed"
MAX_ALIAS_HOPS = 8


async def _route_to_owner(
    view: ApiView, request: Request, key: bytes, url: URL | None = None
) -> Response | None:
    """Proxy to the worker owning `key` (found like `table_route` does); None if it is us.

    Unlike Faust's `route_req`, each hop names the key it was routed for, so a worker that no
    longer owns the key mid-rebalance answers itself instead of bouncing the request around.
    """
    if request.headers.get(ROUTED_HEADER) == key.hex():
        return None
    try:
        owner = app.router.key_store(leads_table.name, key)
    except KeyError:
        raise ApiError(503, "lead owner unknown (rebalancing); retry") from None
    here = app.conf.canonical_url
    if (owner.host, owner.port) == (here.host, here.port):
        return None
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
    headers[ROUTED_HEADER] = key.hex()
    target = (url or request.url).with_scheme(owner.scheme).with_host(owner.host or "127.0.0.1")
    target = target.with_port(owner.port)
    try:
        async with app.http_client.get(target, headers=headers) as resp:
            body = await resp.read()
            return view.bytes(body, content_type=resp.content_type, status=resp.status)
    except aiohttp.ClientError as exc:
        raise ApiError(503, f"lead owner {owner} unreachable: {exc}") from None


_FORWARDED = {"x-api-key", "authorization", "cookie", "x-project-id", "accept", "x-request-id"}


@dataclass(frozen=True, slots=True)
class _FoundLead:
    """A lead found in this worker's table, read as of `now`."""

    project: ProjectRecord
    key: bytes
    summary: LeadSummary
    requested: str  # the key the caller asked for (an alias, perhaps)
    partition: int
    now: int


class _OwnedLeadView(ApiView):
    """A view of one lead, answered by the worker that owns it (following aliases)."""

    need: ClassVar[Permission] = "read"  # the export (web/data_rights.py) needs admin

    async def _lead(self, request: Request, lead_id: str) -> _FoundLead | Response:
        project = await self.project(request, need=self.need)
        path_param(lead_id, "leadId")
        requested = query_str(request, "requestedKey") or lead_id
        key = f"{project.projectId}:{lead_id}".encode()
        routed = await _route_to_owner(self, request, key)
        if routed is not None:
            return routed
        state = lead_store.get(key)
        hops = 0
        while isinstance(state, Alias) and hops < MAX_ALIAS_HOPS:
            # merged: follow the alias (a chain after a takeover) to the worker owning the next
            hops += 1
            canonical = state.canonical
            key = f"{project.projectId}:{canonical}".encode()
            url = request.url.with_path(
                request.url.path.replace(f"/api/leads/{lead_id}", f"/api/leads/{canonical}", 1)
            ).update_query(requestedKey=requested)
            routed = await _route_to_owner(self, request, key, url)
            if routed is not None:
                return routed
            state = lead_store.get(key)
        if not isinstance(state, LeadSummary):
            raise ApiError(404, "lead not found", [FieldError("leadId", "no such lead")])
        partition = partition_for(key, settings.partitions)
        return _FoundLead(project, key, state, requested, partition, now_us())


@app.page("/api/leads/{lead_id}")
class LeadView(_OwnedLeadView):
    async def get(self, request: Request, lead_id: str) -> Response:
        found = await self._lead(request, lead_id)
        if not isinstance(found, _FoundLead):
            return found
        view = lead_store.view_at(
            found.key, found.partition, found.summary, found.project.scoring, found.now
        )
        body = _public(lead_json(view))
        body["requestedKey"] = found.requested
        return self.reply(body)


@app.page("/api/leads/{lead_id}/intelligence")
class IntelligenceView(_OwnedLeadView):
    async def get(self, request: Request, lead_id: str) -> Response:
        found = await self._lead(request, lead_id)
        if not isinstance(found, _FoundLead):
            return found
        key, partition, summary, now = found.key, found.partition, found.summary, found.now
        day = VELOCITY_WINDOW_US
        last = lead_store.count_in_window(key, partition, now - day, now)
        previous = lead_store.count_in_window(key, partition, now - 2 * day, now - day)
        view = lead_view(summary, now, found.project.scoring, last)
        intel = assess(view.lead_stage, summary.last_timestamp, now, last, previous)
        return self.reply(
            {
                "leadId": summary.lead_id,
                "requestedKey": found.requested,
                "currentScore": view.current_score,
                "leadStage": view.lead_stage,
                "daysSinceLastEvent": intel.days_since_last_event,
                "risk": intel.risk,
                "velocity": {
                    "eventsLast24h": intel.events_last_24h,
                    "eventsPrevious24h": intel.events_previous_24h,
                    "trend": intel.velocity_trend,
                },
                "churnProbability": intel.churn_probability,
                "nextBestAction": intel.next_best_action,
            }
        )


_INTERNAL = ("_id", "version", "scoreAtLastEvent", "emailClaim", "merged")


def _public(lead: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lead.items() if k not in _INTERNAL}


def _lead_doc(doc: dict[str, Any]) -> dict[str, Any]:
    out = _public(doc)
    for k in ("firstEventAt", "lastEventAt", "computedAt", "updatedAt"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat().replace("+00:00", "Z")
    for k in ("firstEventAt", "lastEventAt"):
        us = out.pop(f"{k}Us", None)
        if us is not None:
            out[k] = format_timestamp(us)
    return out


@app.page("/api/leads/{lead_id}/timeline")
class TimelineView(ApiView):
    async def get(self, request: Request, lead_id: str) -> Response:
        project = await self.project(request, need="read")
        pid = project.projectId
        path_param(lead_id, "leadId")
        limit = query_int(request, "limit", TIMELINE_PAGE, 1, TIMELINE_MAX_PAGE)
        offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
        lead = await queries.live_lead_id(mongo.db, pid, lead_id)
        if lead is None:
            raise ApiError(404, "lead not found", [FieldError("leadId", "no such lead")])
        # one more than the page: whether another page follows
        rows = await queries.history(mongo.db, pid, lead, offset=offset, limit=limit + 1)
        for row in rows:
            row["timestamp"] = format_timestamp(row.pop("timestampUs"))
        more = len(rows) > limit
        return self.reply(
            {
                "leadId": lead,
                "requestedKey": lead_id,
                "history": rows[:limit],
                "limit": limit,
                "offset": offset,
                "nextOffset": offset + limit if more else None,
            }
        )


@app.page("/api/leads")
class LeadsView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        stage = query_str(request, "stage") or None
        if stage is not None and stage not in STAGES:
            raise ApiError(400, "invalid query", [FieldError("stage", f"one of {STAGES}")])
        min_score = query_str(request, "minScore", max_chars=32)
        threshold = None
        if min_score:
            try:
                threshold = float(min_score)
            except ValueError:
                threshold = math.nan
            if not math.isfinite(threshold):
                raise ApiError(
                    400, "invalid query", [FieldError("minScore", "must be a finite number")]
                )
        search = query_str(request, "q")
        query = queries.leads_query(  # the dashboard's search box: a key, an alias, an e-mail
            project.projectId,
            stage=stage,
            min_score=threshold,
            search=search.strip() if search else None,
        )
        sort_by = query_str(request, "sort") or "score"
        if sort_by not in ("score", "lastActivity"):
            raise ApiError(400, "invalid query", [FieldError("sort", "score or lastActivity")])
        order = (
            [("currentScore", -1), ("leadId", 1)]
            if sort_by == "score"
            else [("lastEventAt", -1), ("leadId", 1)]
        )
        return self.reply(await _page(request, query, order))


async def _page(
    request: Request, query: dict[str, Any], order: list[tuple[str, int]]
) -> dict[str, Any]:
    limit = query_int(request, "limit", 50, 1, 1000)
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    total, docs = await queries.leads_page(mongo.db, query, order, offset, limit)
    leads = [_lead_doc(doc) for doc in docs]
    return {"total": total, "limit": limit, "offset": offset, "leads": leads}


@app.page("/api/leaderboard")
class LeaderboardView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        body = await _page(
            request, queries.leads_query(project.projectId), [("currentScore", -1), ("leadId", 1)]
        )
        for rank, lead in enumerate(body["leads"], start=body["offset"] + 1):
            lead["rank"] = rank
        return self.reply(body)


@app.page("/api/leaderboard/by-stage")
class LeaderboardByStageView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        found = await queries.stage_counts(mongo.db, project.projectId)
        counts = {stage: found.get(stage, 0) for stage in STAGES}
        return self.reply(
            {"projectId": project.projectId, "stages": counts, "total": sum(counts.values())}
        )
