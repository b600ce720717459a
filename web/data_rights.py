"""Data rights of one lead (SPEC 11, issue #15): the export and the erasure.

`GET /api/leads/{leadId}/export` needs the **admin** right, not read: it hands over every
property of every event, which is more than any read route shows, and answering a person's
access request is a project administrator's act. It is answered by the worker that owns the
lead (an alias is followed to the lead it was merged into, so a merged person's export has the
events of every key they used): the events come from that worker's table — the one complete
copy of what leadscore derived from the log — and the document, history rows and automation
firings from MongoDB.

`DELETE /api/leads/{leadId}` (admin right) erases the lead with that key, its aliases and its
anonymous ids (agents/erasure.py, ADR 0020) and answers 202 at once: the erasure record is
written before the answer, the owning worker deletes the lead within moments. Any key is
accepted — erasing a key leadscore never saw still makes sure no event of it logged before now
is ever scored — so the answer does not reveal whether the key was known.
"""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response

from agents.erasure import request_erasure
from app.erasures import key_hash
from app.records import lead_json
from app.topology import app, mongo
from core.timeutil import format_timestamp
from store import queries
from tables.leads import lead_store
from web.base import ApiView, audit, path_param
from web.leads import _FoundLead, _lead_doc, _OwnedLeadView

__all__ = ["EraseView", "ExportView"]


def _events(found: _FoundLead) -> list[dict[str, Any]]:
    out = []
    for fact in lead_store.all_facts(found.key, found.partition):
        record = lead_store.event_record(found.key, fact.event_id)
        out.append(
            {
                "eventId": fact.event_id,
                "eventType": fact.event_type,
                "timestamp": format_timestamp(fact.timestamp),
                "points": fact.points,
                "scoreAfter": fact.score_after,
                "properties": record[1] if record is not None else None,
            }
        )
    return out


@app.page("/api/leads/{lead_id}/export")
class ExportView(_OwnedLeadView):
    need = "admin"

    async def get(self, request: Request, lead_id: str) -> Response:
        found = await self._lead(request, lead_id)
        if not isinstance(found, _FoundLead):
            return found  # answered by the owning worker
        pid, canonical = found.project.projectId, found.summary.lead_id
        db = mongo.db
        doc = await queries.lead_document(db, pid, canonical)
        history = await queries.history(db, pid, canonical, with_project=True)
        for row in history:
            row["timestamp"] = format_timestamp(row.pop("timestampUs"))
        firings = [
            {k: v for k, v in f.items() if k != "_id"}
            async for f in db.automation_firings.find({"projectId": pid, "leadId": canonical})
        ]
        view = lead_store.view_at(
            found.key, found.partition, found.summary, found.project.scoring, found.now
        )
        table = lead_json(view)
        return self.reply(
            {
                "projectId": pid,
                "leadId": canonical,
                "requestedKey": found.requested,
                "exportedAt": format_timestamp(found.now),
                "lead": _lead_doc(doc) if doc is not None else None,
                "aliases": table["aliases"],
                "anonymousIds": list(found.summary.anonymous_ids),
                "traits": {k: table[k] for k in ("email", "name", "company")},
                "events": _events(found),
                "history": history,
                "automationFirings": firings,
            },
        )


@app.page("/api/leads/{lead_id}")
class EraseView(ApiView):
    async def delete(self, request: Request, lead_id: str) -> Response:
        caller = await self.authorize(request, "admin")
        path_param(lead_id, "leadId")
        pid = caller.project_id or ""
        # the wall clock, not LEADSCORE_NOW: it is compared with Kafka record timestamps
        erased_at = time.time_ns() // 1_000
        await request_erasure(pid, lead_id, erased_at, caller.actor)
        digest = key_hash(pid, lead_id)
        after = {"keyHash": digest, "erasedAt": format_timestamp(erased_at)}
        await audit(caller, "lead.erase", digest, None, after)
        return self.reply({"status": "accepted", **after}, status=202)
