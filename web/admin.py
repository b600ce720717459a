"""Admin routes of a project: rebuild one lead, rescore all, and the invariant report."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.web import Request, Response

from agents.outbox import send_command
from app.records import ProjectRecord
from app.settings import settings
from app.topology import app, mongo
from core.invariants import Violation, check_aliases, check_history_chain, check_lead_against_table
from tables.leads import lead_store, leads_table
from web.base import ApiError, ApiView, path_param

__all__ = ["HeavyRouteGate", "RebuildView", "RescoreView", "SystemHealthView", "TableLeadsView"]

LIVE = {"merged": {"$exists": False}}
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
            await send_command(key, {"command": "rebuild", "projectId": project.projectId})
        return self.reply({"status": "queued", "leadId": lead_id}, status=202)


@app.page("/api/admin/rescore")
class RescoreView(ApiView):
    """Recompute every lead of the project under its current rules, on the owning workers."""

    async def post(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        body = {"command": "rescore-project", "projectId": project.projectId}
        with heavy.slot():
            for partition in range(settings.partitions):
                await send_command(f"{project.projectId}:*".encode(), body, partition=partition)
        return self.reply(
            {"status": "queued", "projectId": project.projectId, "partitions": settings.partitions},
            status=202,
        )


@app.page("/api/internal/table-leads")
class TableLeadsView(ApiView):
    """This worker's table state of the caller's project (its active partitions only)."""

    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        topic = leads_table.changelog_topic.get_topic_name()
        leads: dict[str, Any] = {}
        aliases: dict[str, str] = {}
        for tp in app.assignor.assigned_actives():
            if tp.topic != topic:
                continue
            for _key, state in lead_store.leads_of_project(project.projectId, tp.partition):
                leads[state.lead_id] = {
                    "eventCount": state.event_count,
                    "email": state.email,
                    "scoreAtLastEvent": state.score,
                    "version": state.version,
                }
            for alias_key, alias in lead_store.aliases_of_project(project.projectId, tp.partition):
                aliases[alias_key] = alias.canonical
        return self.reply({"leads": leads, "aliases": aliases})


async def _table_state(request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    """Gather the table state of every worker (each serves the partitions it owns)."""
    urls = set(app.router.tables_metadata())
    leads: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    credentials = {"x-api-key", "authorization", "cookie", "x-project-id"}
    headers = {k: v for k, v in request.headers.items() if k.lower() in credentials}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in urls:
            async with http.get(
                f"{str(url).rstrip('/')}/api/internal/table-leads", headers=headers
            ) as r:
                if r.status != 200:
                    raise ApiError(503, f"worker {url} did not answer ({r.status})")
                body = await r.json()
                leads.update(body["leads"])
                aliases.update(body["aliases"])
    return leads, aliases


async def _consumer_lag() -> dict[str, int]:
    topic = settings.topic("events")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(app.conf.id)
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = await _end_offsets(tps)
    return {
        str(tp.partition): max(0, ends[tp] - (committed[tp].offset if tp in committed else 0))
        for tp in tps
    }


async def _end_offsets(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


@app.page("/api/admin/system-health")
class SystemHealthView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        with heavy.slot():
            return await self._report(request, project)

    async def _report(self, request: Request, project: ProjectRecord) -> Response:
        pid = project.projectId
        (table_leads, table_aliases), lag = await asyncio.gather(
            _table_state(request), _consumer_lag()
        )
        db = mongo.db
        docs = [d async for d in db.leads.find({"projectId": pid, **LIVE})]
        rows_by_lead: dict[str, list[dict[str, Any]]] = defaultdict(list)
        cursor = db.score_history.find({"projectId": pid}).sort(
            [("leadId", 1), ("timestampUs", 1), ("eventId", 1)]
        )
        async for row in cursor:
            rows_by_lead[row["leadId"]].append(row)
        violations: list[Violation] = []
        for doc in docs:
            lead_id = doc["leadId"]
            rows = rows_by_lead.get(lead_id, [])
            violations += check_lead_against_table(doc, table_leads.get(lead_id), len(rows))
            violations += check_history_chain(lead_id, rows, project.scoring)
            ids = [r["eventId"] for r in rows]
            if len(ids) != len(set(ids)):
                violations.append(
                    Violation("one_history_row_per_event", lead_id, "duplicate eventId rows")
                )
        live = {d["leadId"] for d in docs}
        for lead_id in table_leads.keys() - live:
            violations.append(
                Violation("mongo_equals_tables", lead_id, "in a table but not in MongoDB")
            )
        for lead_id in rows_by_lead.keys() - live:
            violations.append(
                Violation("history_of_live_leads", lead_id, "history rows of no live lead")
            )
        violations += check_aliases(live, {d["leadId"]: d.get("aliases", []) for d in docs})
        for alias_key in table_aliases:
            alias_id = alias_key.split(":", 1)[1]
            if alias_id in table_leads:
                violations.append(
                    Violation("canonical_or_alias", alias_id, "alias and lead in tables")
                )
        return self.reply(
            {
                "status": "HEALTHY" if not violations else "DEGRADED",
                "projectId": pid,
                "leadsChecked": len(docs),
                "historyRowsChecked": sum(len(r) for r in rows_by_lead.values()),
                "violations": [v.as_json() for v in violations],
                "consumerLag": lag,
            }
        )
