"""Projects, rules and settings (keys are in web/keys.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faust.web import Request, Response
from pydantic import ValidationError

from app.records import ProjectSettings, RuleModel
from app.settings import settings
from app.topology import app, audit_log, directory
from core.events import EVENT_TYPE_PATTERN, EVENT_TYPE_RE, FieldError
from web.base import ApiError, ApiView, audit, project_of, registry

__all__ = [
    "CurrentProjectView",
    "ProjectsView",
    "RuleView",
    "RulesView",
    "ScoringRulesView",
    "SettingsView",
]


def _fields(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(
            ".".join(str(p) for p in e["loc"]) or "body", e["msg"].removeprefix("Value error, ")
        )
        for e in exc.errors()
    ]


def _parse(model: Any, body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid body", _fields(exc)) from None


def _event_type(event_type: Any) -> str:
    if not isinstance(event_type, str) or not EVENT_TYPE_RE.match(event_type):
        raise ApiError(
            422,
            "invalid event type",
            [FieldError("eventType", f"must match {EVENT_TYPE_PATTERN}")],
        )
    return event_type


def _rule_json(rule: RuleModel | None) -> dict[str, Any] | None:
    return None if rule is None else rule.model_dump()


_changing: dict[str, asyncio.Lock] = {}
CHANGE_RETRY_AFTER_SECONDS = 1


@asynccontextmanager
async def _one_change_at_a_time(project_id: str) -> AsyncIterator[None]:
    """Changes to one project from this process, one after the other.

    The registry's read-change-write is optimistic and gives up after 50 lost races: a burst of
    concurrent changes to one project made the losers answer 500. In turn, they only race with
    other processes; a change that still cannot get through is a 503 to retry, not a 500.
    """
    lock = _changing.setdefault(project_id, asyncio.Lock())
    async with lock:
        try:
            yield
        except RuntimeError as exc:  # ProjectRegistry._update: kept changing under us
            raise ApiError(
                503, f"project busy; retry ({exc})", retry_after=CHANGE_RETRY_AFTER_SECONDS
            ) from None


def _check_room_for_a_rule(rules: int) -> None:
    """A project holds at most LEADSCORE_MAX_RULES rules, so that its record (republished whole
    on every change) stays far below the broker's message limit (issue 10 finding 7)."""
    if rules >= settings.max_rules:
        raise ApiError(
            409,
            "too many rules",
            [FieldError("eventType", f"a project holds at most {settings.max_rules} rules")],
        )


@app.page("/api/projects")
class ProjectsView(ApiView):
    async def post(self, request: Request) -> Response:
        caller = await self.require_admin(request)
        body = await self.json_body(request, max_bytes=16 * 1024) or {}
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ApiError(422, "invalid body", [FieldError("name", "1-200 characters required")])
        record, api_key = await registry.create(name)
        await audit_log.record(
            record.projectId,
            caller.actor,
            "project.create",
            record.projectId,
            None,
            record.public(),
        )
        return self.reply({**record.public(), "apiKey": api_key}, status=201)


@app.page("/api/projects/current")
class CurrentProjectView(ApiView):
    async def get(self, request: Request) -> Response:
        return self.reply((await self.project(request, need="read")).public())


@app.page("/api/rules")
class RulesView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        rules = [{"eventType": t, **r.model_dump()} for t, r in sorted(project.rules.items())]
        return self.reply({"projectId": project.projectId, "rules": rules})


async def _put_rule(view: ApiView, request: Request, event_type: Any, body: Any) -> RuleModel:
    """Authorize first: a caller without the right learns nothing from validation errors."""
    caller = await view.authorize(request, "rules")
    event_type = _event_type(event_type)
    rule = _parse(RuleModel, body)
    project_id = caller.project_id or ""
    async with _one_change_at_a_time(project_id):
        # the project as of now: changes queued before this one may have added rules
        current = directory.get(project_id)
        if current is not None and event_type not in current.rules:
            _check_room_for_a_rule(len(current.rules))
        before, after = await registry.put_rule(project_id, event_type, rule)
    await audit(
        caller,
        "rule.put",
        event_type,
        _rule_json(before.rules.get(event_type)),
        _rule_json(after.rules.get(event_type)),
    )
    return after.rules[event_type]


@app.page("/api/rules/{event_type}")
class RuleView(ApiView):
    async def put(self, request: Request, event_type: str) -> Response:
        body = await self.json_body(request, max_bytes=4096)
        rule = await _put_rule(self, request, event_type, body)
        return self.reply({"eventType": event_type, **rule.model_dump()})

    async def delete(self, request: Request, event_type: str) -> Response:
        caller = await self.authorize(request, "rules")
        project = project_of(caller)
        if _event_type(event_type) not in project.rules:
            raise ApiError(404, "no such rule", [FieldError("eventType", "has no rule")])
        async with _one_change_at_a_time(project.projectId):
            before, _ = await registry.delete_rule(project.projectId, event_type)
        await audit(
            caller, "rule.delete", event_type, _rule_json(before.rules.get(event_type)), None
        )
        return self.reply({"eventType": event_type, "deleted": True})


@app.page("/api/scoring-rules")
class ScoringRulesView(RulesView):
    """Alias of the replaced system: `GET` lists the rules like `/api/rules`; `POST
    {eventType, points, active?, description?}` creates or replaces one (201)."""

    async def post(self, request: Request) -> Response:
        body = await self.json_body(request, max_bytes=4096)
        if not isinstance(body, dict):
            body = {}  # _put_rule authorizes, then names the missing fields
        event_type = body.get("eventType")
        fields = {k: v for k, v in body.items() if k in ("points", "active")}
        rule = await _put_rule(self, request, event_type, fields)
        return self.reply({"eventType": event_type, **rule.model_dump()}, status=201)


@app.page("/api/settings")
class SettingsView(ApiView):
    async def get(self, request: Request) -> Response:
        project = await self.project(request, need="read")
        return self.reply(project.settings.model_dump(mode="json"))

    async def put(self, request: Request) -> Response:
        caller = await self.authorize(request, "settings")
        # strict, finite, ranged and ordered (app.records): issue 10 finding 1
        new = _parse(ProjectSettings, await self.json_body(request, max_bytes=16 * 1024))
        async with _one_change_at_a_time(caller.project_id or ""):
            before, after = await registry.put_settings(caller.project_id or "", new)
        await audit(
            caller,
            "settings.put",
            "settings",
            before.settings.model_dump(mode="json"),
            after.settings.model_dump(mode="json"),
        )
        return self.reply(after.settings.model_dump(mode="json"))
