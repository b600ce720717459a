"""Automation rules, their firings and deliveries (SPEC 9).

Rules are kept in the project record (MongoDB, then the compacted projects topic), so every
worker applies a change within moments, without a restart. Managing rules, testing them and
redelivering need the `rules` right; reading rules and firings needs `read`. Changes are audited
with secrets masked.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from faust.web import Request, Response
from pydantic import ValidationError

from app.automations import (
    AutomationIn,
    AutomationModel,
    WebhookAction,
    new_automation_id,
    new_secret,
    shown,
)
from app.firings import STATUSES
from app.records import ProjectRecord
from app.senders import Senders, webhook_payload
from app.settings import settings
from app.topology import app, firing_log
from core.events import FieldError
from web.base import ApiError, ApiView, audit, project_of, query_int, registry

__all__ = [
    "AutomationTestView",
    "AutomationView",
    "AutomationsView",
    "FiringView",
    "FiringsView",
    "RedeliverFiringView",
    "RedeliverRuleView",
]

_MAX_BODY = 16 * 1024
_senders = Senders(settings)


class _TooMany(Exception):
    pass


def _parse(body: Any) -> AutomationIn:
    try:
        return AutomationIn.model_validate(body)
    except ValidationError as exc:
        fields = [
            FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()
        ]
        raise ApiError(422, "invalid automation rule", fields) from None


def _find(project: ProjectRecord, automation_id: str) -> AutomationModel:
    for rule in project.automations:
        if rule.id == automation_id:
            return rule
    raise ApiError(404, "no such automation", [FieldError("id", "is unknown")])


def _firing_json(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": doc["_id"]}
    for k, v in doc.items():
        if k in ("_id", "leaseOwner", "leaseUntil"):
            continue
        out[k] = _jsonable(v)
    if out.get("status") != "pending":
        out.pop("nextAttemptAt", None)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@app.page("/api/automations")
class AutomationsView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        return self.reply(
            {"projectId": project.projectId, "automations": [shown(a) for a in project.automations]}
        )

    async def post(self, request: Request) -> Response:
        caller = await self.authorize(request, "rules")
        rule_in = _parse(await self.json_body(request, max_bytes=_MAX_BODY))
        generated = None
        if isinstance(rule_in.action, WebhookAction) and not rule_in.action.secret:
            generated = new_secret()
            rule_in = rule_in.model_copy(
                update={"action": rule_in.action.model_copy(update={"secret": generated})}
            )
        rule = AutomationModel(id=new_automation_id(), **dict(rule_in))
        cap = settings.max_automations_per_project

        def add(d: dict[str, Any]) -> None:
            if len(d.get("automations", [])) >= cap:
                raise _TooMany
            d.setdefault("automations", []).append(rule.model_dump(mode="json"))

        try:
            await registry.change(caller.project_id or "", add)
        except _TooMany:
            raise ApiError(
                409,
                f"a project holds at most {cap} automation rules (LEADSCORE_MAX_AUTOMATIONS)",
            ) from None
        await audit(caller, "automation.create", rule.id, None, shown(rule))
        body = shown(rule)
        if generated is not None:  # shown once, like an API key
            body["action"]["secret"] = generated
        return self.reply(body, status=201)


@app.page("/api/automations/{automation_id}")
class AutomationView(ApiView):
    async def get(self, request: Request, automation_id: str) -> Response:
        project = await self.project(request, need="read")
        return self.reply(shown(_find(project, automation_id)))

    async def put(self, request: Request, automation_id: str) -> Response:
        caller = await self.authorize(request, "rules")
        old = _find(project_of(caller), automation_id)
        rule_in = _parse(await self.json_body(request, max_bytes=_MAX_BODY))
        action = rule_in.action
        if (
            isinstance(action, WebhookAction)
            and not action.secret
            and isinstance(old.action, WebhookAction)
        ):
            action = action.model_copy(update={"secret": old.action.secret})  # kept
        elif isinstance(action, WebhookAction) and not action.secret:
            action = action.model_copy(update={"secret": new_secret()})
        new = AutomationModel(id=automation_id, **{**dict(rule_in), "action": action})

        def replace_rule(d: dict[str, Any]) -> None:
            rules = d.get("automations", [])
            if not any(r["id"] == automation_id for r in rules):
                raise KeyError(automation_id)
            d["automations"] = [
                new.model_dump(mode="json") if r["id"] == automation_id else r for r in rules
            ]

        try:
            await registry.change(caller.project_id or "", replace_rule)
        except KeyError:
            raise ApiError(404, "no such automation", [FieldError("id", "is unknown")]) from None
        await audit(caller, "automation.update", automation_id, shown(old), shown(new))
        return self.reply(shown(new))

    async def delete(self, request: Request, automation_id: str) -> Response:
        caller = await self.authorize(request, "rules")
        old = _find(project_of(caller), automation_id)
        await registry.change(
            caller.project_id or "",
            lambda d: d.update(
                automations=[r for r in d.get("automations", []) if r["id"] != automation_id]
            ),
        )
        await audit(caller, "automation.delete", automation_id, shown(old), None)
        return self.reply({"id": automation_id, "deleted": True})


@app.page("/api/automations/{automation_id}/test")
class AutomationTestView(ApiView):
    """Sends a sample firing to the rule's destination, once, and answers what it said."""

    async def post(self, request: Request, automation_id: str) -> Response:
        caller = await self.authorize(request, "rules")
        project = project_of(caller)
        rule = _find(project, automation_id)
        now = datetime.now(UTC)
        sample = {
            "_id": "test_" + secrets.token_hex(12),
            "projectId": project.projectId,
            "ruleId": rule.id,
            "ruleName": rule.name,
            "trigger": rule.trigger.model_dump(mode="json"),
            "lead": {
                "projectId": project.projectId,
                "leadId": "sample-lead",
                "aliases": [],
                "email": "sample@example.com",
                "name": "Sample Lead",
                "company": "Example Inc.",
                "currentScore": 120.0,
                "leadStage": "qualified",
                "velocityScore": 3,
                "eventsLast24h": 3,
                "eventCount": 7,
            },
            "event": {
                "eventId": "sample-event",
                "eventType": "demo_request",
                "timestamp": now.isoformat().replace("+00:00", "Z"),
            },
            "firedAt": now,
        }
        outcome = await _senders.send(rule.action, webhook_payload(sample))
        return self.reply(
            {
                "id": sample["_id"],
                "delivered": outcome.delivered,
                "status": outcome.status,
                "error": outcome.error,
                "response": outcome.body,
                "durationMs": round(outcome.duration_ms, 1),
            }
        )


@app.page("/api/automations/{automation_id}/firings")
class FiringsView(ApiView):
    async def get(self, request: Request, automation_id: str) -> Response:
        project = await self.project(request, need="read")
        _find(project, automation_id)
        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(
                400, "invalid query", [FieldError("status", f"must be one of {list(STATUSES)}")]
            )
        docs = await firing_log.list(
            project.projectId,
            rule_id=automation_id,
            status=status,
            lead_id=request.query.get("leadId") or None,
            limit=query_int(request, "limit", 100, 1, 1000),
        )
        return self.reply({"firings": [_firing_json(d) for d in docs]})


@app.page("/api/automations/{automation_id}/redeliver")
class RedeliverRuleView(ApiView):
    """Every failed firing of the rule is delivered again."""

    async def post(self, request: Request, automation_id: str) -> Response:
        caller = await self.authorize(request, "rules")
        _find(project_of(caller), automation_id)
        n = await firing_log.redeliver(caller.project_id or "", rule_id=automation_id)
        await audit(caller, "automation.redeliver", automation_id, None, {"firings": n})
        return self.reply({"redelivering": n}, status=202)


@app.page("/api/firings/{firing_id}")
class FiringView(ApiView):
    async def get(self, request: Request, firing_id: str) -> Response:
        project = await self.project(request, need="read")
        doc = await firing_log.get(project.projectId, firing_id)
        if doc is None:
            raise ApiError(404, "no such firing", [FieldError("firingId", "is unknown")])
        return self.reply(_firing_json(doc))


@app.page("/api/firings/{firing_id}/redeliver")
class RedeliverFiringView(ApiView):
    async def post(self, request: Request, firing_id: str) -> Response:
        caller = await self.authorize(request, "rules")
        project_id = caller.project_id or ""
        doc = await firing_log.get(project_id, firing_id)
        if doc is None:
            raise ApiError(404, "no such firing", [FieldError("firingId", "is unknown")])
        if doc["status"] != "failed":
            raise ApiError(
                409,
                f"only a failed firing can be redelivered; this one is {doc['status']}",
                [FieldError("firingId", f"is {doc['status']}")],
            )
        await firing_log.redeliver(project_id, firing_id=firing_id)
        await audit(
            caller, "firing.redeliver", firing_id, {"status": "failed"}, {"status": "pending"}
        )
        return self.reply({"id": firing_id, "status": "pending"}, status=202)
