"""Dead-letter admin (SPEC 11, issue #15): list, inspect, re-drive, purge — the admin right.

Re-driving produces the original record (key and value as they were) to its original topic
again, so it goes through validation, routing and eventId deduplication like any record: a
record re-driven twice, or re-driven after it was sent again some other way, is scored once.
Re-driving or purging by reason takes at most `_MAX_PER_CALL` records per call (the answer
says whether more match), so one request never holds a worker for long.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.dead_letters import dead_letters
from app.dead_letters import DeadLetterStore, public
from app.topology import app, claims_topic, commands_topic, events_topic, lead_changes_topic
from core.events import FieldError
from web.base import ApiError, ApiView, audit, path_param, query_int, query_str

__all__ = ["DeadLetterView", "DeadLettersView", "PurgeView", "RedriveView"]

_MAX_PER_CALL = 1000
# every topic a consumer dead-letters from; a re-driven lead change is version-guarded, a claim
# re-decided idempotently, so re-driving any of them twice is as safe as for events
_TOPICS = {
    "events": events_topic,
    "lead-commands": commands_topic,
    "lead-changes": lead_changes_topic,
    "identity-claims": claims_topic,
}


class Selection(BaseModel):
    """Exactly one of `ids` (these dead letters) or `reason` (every open one of that class or
    reason)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(default=None, min_length=1, max_length=_MAX_PER_CALL)
    reason: str | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one(self) -> Selection:
        if (self.ids is None) == (self.reason is None):
            raise ValueError("give either ids or reason")
        return self

    def query(self, project_id: str) -> dict[str, Any]:
        if self.ids is not None:
            return {"projectId": project_id, "_id": {"$in": self.ids}, "status": {"$ne": "purged"}}
        return DeadLetterStore.query(project_id, self.reason, "open")


async def _selection(view: ApiView, request: Request) -> Selection:
    body = await view.json_body(request, max_bytes=256 * 1024)
    try:
        return Selection.model_validate(body)
    except ValidationError as exc:
        fields = [
            FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()
        ]
        raise ApiError(422, "invalid selection", fields) from None


@app.page("/api/dead-letters")
class DeadLettersView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="admin")
        status = query_str(request, "status")
        if status not in (None, "open", "redriven"):
            raise ApiError(400, "invalid query", [FieldError("status", "must be open or redriven")])
        limit = query_int(request, "limit", 100, 1, 1000)
        offset = query_int(request, "offset", 0, 0, 1_000_000)
        reason = query_str(request, "reason", max_chars=500)
        query = DeadLetterStore.query(project.projectId, reason, status)
        items = await dead_letters.page(query, limit, offset)
        return self.reply({"deadLetters": items, "limit": limit, "offset": offset})


@app.page("/api/dead-letters/{dl_id}")
class DeadLetterView(ApiView):
    async def get(self, request: Request, dl_id: str) -> Response:
        project = await self.project(request, need="admin")
        doc = await dead_letters.get(project.projectId, path_param(dl_id, "deadLetterId"))
        if doc is None:
            raise ApiError(404, "no such dead letter")
        return self.reply(public(doc))


@app.page("/api/dead-letters/redrive")
class RedriveView(ApiView):
    async def post(self, request: Request) -> Response:
        caller = await self.authorize(request, "admin")
        selection = await _selection(self, request)
        redriven: list[str] = []
        skipped: list[dict[str, str]] = []
        query = selection.query(caller.project_id or "")
        async for doc in dead_letters.matching(query, _MAX_PER_CALL + 1):
            if len(redriven) + len(skipped) == _MAX_PER_CALL:
                break
            topic = _TOPICS.get(doc.get("topic", ""))
            if topic is None or doc.get("value") is None:
                skipped.append({"id": doc["_id"], "why": "no original record to re-drive"})
                continue
            key = doc["key"].encode() if doc.get("key") is not None else None
            await (await topic.send(key=key, value=doc["value"].encode()))
            await dead_letters.mark_redriven(doc["_id"])
            redriven.append(doc["_id"])
        more = selection.reason is not None and len(redriven) + len(skipped) == _MAX_PER_CALL
        if selection.ids is not None:
            found = set(redriven) | {s["id"] for s in skipped}
            skipped += [
                {"id": i, "why": "no such dead letter"} for i in selection.ids if i not in found
            ]
        after = {"redriven": redriven, "skipped": skipped, "more": more}
        await audit(caller, "dead-letters.redrive", selection.reason or "ids", None, after)
        return self.reply(after)


@app.page("/api/dead-letters/purge")
class PurgeView(ApiView):
    async def post(self, request: Request) -> Response:
        caller = await self.authorize(request, "admin")
        selection = await _selection(self, request)
        purged = await dead_letters.purge(selection.query(caller.project_id or ""))
        after = {"purged": purged}
        await audit(caller, "dead-letters.purge", selection.reason or "ids", None, after)
        return self.reply(after)
