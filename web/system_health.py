"""`GET /api/admin/system-health` for projects of any size (issue #15): a streamed comparison.

The report compares three sorted streams, one lead at a time: the project's live `leads`
documents (by leadId), its `score_history` rows (by leadId, then timestamp and eventId), and the
table state of every worker, read in pages of `PAGE` keys from `/api/internal/table-leads` and
merged across workers. Memory is bounded by one lead's history, one page per worker and at most
`MAX_VIOLATIONS` reported violations (the total is counted), whatever the project's size. Alias
conflicts are checked against MongoDB per batch of documents instead of a set of every lead.

The consumer lag comes from the workers' own metrics (each page answer carries the lag of the
partitions that worker consumes): no admin client and no broker round trip per call.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from faust.web import Request, Response

from app.records import ProjectRecord
from app.topology import app, mongo
from core.config import ScoringConfig
from core.invariants import Violation, check_history_chain, check_lead_against_table
from store import queries
from web.admin import heavy
from web.base import ApiError, ApiView

__all__ = ["MAX_VIOLATIONS", "PAGE", "SystemHealthView"]

PAGE = 1000
MAX_VIOLATIONS = 1000
_ALIAS_BATCH = 500
_CREDENTIALS = {"x-api-key", "authorization", "cookie", "x-project-id"}


class _Worker:
    """The table entries of one worker, page by page, in key order."""

    def __init__(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self.http, self.url, self.headers = http, url, headers
        self.lag: dict[str, int] = {}

    async def entries(self) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            params = {"limit": str(PAGE), **({"after": after} if after is not None else {})}
            async with self.http.get(
                f"{self.url}/api/internal/table-leads", headers=self.headers, params=params
            ) as r:
                if r.status != 200:
                    raise ApiError(503, f"worker {self.url} did not answer ({r.status})")
                body = await r.json()
            self.lag.update(body.get("lag", {}))
            for entry in body["entries"]:
                yield entry
            after = body.get("next")
            if after is None:
                return


async def _merged(sources: list[AsyncIterator[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    """k-way merge of key-ordered async streams."""
    heap: list[tuple[str, int, dict[str, Any]]] = []
    for n, source in enumerate(sources):
        first = await anext(source, None)
        if first is not None:
            heap.append((first["key"], n, first))
    heapq.heapify(heap)
    while heap:
        _, n, entry = heapq.heappop(heap)
        yield entry
        following = await anext(sources[n], None)
        if following is not None:
            heapq.heappush(heap, (following["key"], n, following))


class _Peek:
    """An async iterator one item of which can be looked at before it is taken."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self._source = source
        self._next: Any = None
        self._done = False

    async def peek(self) -> Any:
        if self._next is None and not self._done:
            self._next = await anext(self._source, None)
            self._done = self._next is None
        return self._next

    async def take(self) -> Any:
        item = await self.peek()
        self._next = None
        return item


class _Report:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.total = 0
        self.leads = 0
        self.rows = 0

    def add(self, found: list[Violation]) -> None:
        self.total += len(found)
        room = MAX_VIOLATIONS - len(self.violations)
        if room > 0:
            self.violations += found[:room]


async def _compare(
    pid: str, scoring: ScoringConfig, table: AsyncIterator[dict[str, Any]], report: _Report
) -> None:
    db = mongo.db
    docs = _Peek(queries.live_leads_of_project(db, pid))
    rows = _Peek(queries.history_of_project(db, pid))
    tables = _Peek(table)
    alias_batch: dict[str, str] = {}  # alias -> the live lead listing it
    while True:
        heads = [await docs.peek(), await rows.peek(), await tables.peek()]
        keys = [h["leadId"] for h in heads[:2] if h is not None]
        if heads[2] is not None:
            keys.append(heads[2]["key"])
        if not keys:
            break
        lead_id = min(keys)
        doc = await docs.take() if heads[0] is not None and heads[0]["leadId"] == lead_id else None
        lead_rows: list[dict[str, Any]] = []
        while (row := await rows.peek()) is not None and row["leadId"] == lead_id:
            lead_rows.append(await rows.take())
        entries: list[dict[str, Any]] = []
        while (entry := await tables.peek()) is not None and entry["key"] == lead_id:
            entries.append(await tables.take())
        table_lead = next((e["lead"] for e in entries if "lead" in e), None)
        report.rows += len(lead_rows)
        if any("alias" in e for e in entries) and table_lead is not None:
            report.add([Violation("canonical_or_alias", lead_id, "alias and lead in tables")])
        if doc is None:
            if table_lead is not None:
                report.add(
                    [Violation("mongo_equals_tables", lead_id, "in a table but not in MongoDB")]
                )
            if lead_rows:
                report.add(
                    [Violation("history_of_live_leads", lead_id, "history rows of no live lead")]
                )
            continue
        report.leads += 1
        found = check_lead_against_table(doc, table_lead, len(lead_rows))
        found += check_history_chain(lead_id, lead_rows, scoring)
        ids = [r["eventId"] for r in lead_rows]
        if len(ids) != len(set(ids)):
            found.append(Violation("one_history_row_per_event", lead_id, "duplicate eventId rows"))
        report.add(found)
        for alias in doc.get("aliases", []):
            if alias != lead_id:
                alias_batch[alias] = lead_id
        if len(alias_batch) >= _ALIAS_BATCH:
            await _check_aliases(pid, alias_batch, report)
            alias_batch = {}
    await _check_aliases(pid, alias_batch, report)


async def _check_aliases(pid: str, aliases: dict[str, str], report: _Report) -> None:
    """No key is both a canonical lead and an alias of another."""
    if not aliases:
        return
    for alias in await queries.live_leads_among(mongo.db, pid, aliases):
        report.add(
            [
                Violation(
                    "canonical_or_alias", alias, f"alias of {aliases[alias]} and a lead of its own"
                )
            ]
        )


@app.page("/api/admin/system-health")
class SystemHealthView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        with heavy.slot():  # one of this process's heavy admin requests (issue 10)
            return await self._report(request, project)

    async def _report(self, request: Request, project: ProjectRecord) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _CREDENTIALS}
        report = _Report()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            workers = [
                _Worker(http, str(url).rstrip("/"), headers)
                for url in sorted(set(app.router.tables_metadata()), key=str)
            ]
            await _compare(
                project.projectId,
                project.scoring,
                _merged([w.entries() for w in workers]),
                report,
            )
        lag: dict[str, int] = {}
        for worker in workers:
            lag.update(worker.lag)
        return self.reply(
            {
                "status": "HEALTHY" if not report.total else "DEGRADED",
                "projectId": project.projectId,
                "leadsChecked": report.leads,
                "historyRowsChecked": report.rows,
                "violations": [v.as_json() for v in report.violations],
                "violationsTotal": report.total,
                "consumerLag": dict(sorted(lag.items(), key=lambda kv: int(kv[0]))),
            }
        )
