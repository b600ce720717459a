"""Projects, API keys, rules and settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faust.web import Request, Response
from pydantic import ValidationError

from app.records import ProjectSettings, RuleModel
from app.settings import settings
from app.topology import app, directory
from core.events import EVENT_TYPE_PATTERN, EVENT_TYPE_RE, FieldError
from web.base import ApiError, ApiView, registry

__all__ = [
    "CurrentProjectView",
    "KeysView",
    "ProjectsView",
    "RuleView",
    "RulesView",
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
        self.require_admin(request)
        body = await self.json_body(request, max_bytes=16 * 1024) or {}
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ApiError(422, "invalid body", [FieldError("name", "1-200 characters required")])
        record, api_key = await registry.create(name)
        return self.reply({**record.public(), "apiKey": api_key}, status=201)


@app.page("/api/projects/current")
class CurrentProjectView(ApiView):
    async def get(self, request: Request) -> Response:
        return self.reply(self.project(request).public())


@app.page("/api/projects/current/keys")
class KeysView(ApiView):
    async def post(self, request: Request) -> Response:
        project = self.project(request)
        api_key = await registry.add_key(project.projectId)
        return self.reply({"projectId": project.projectId, "apiKey": api_key}, status=201)


@app.page("/api/rules")
class RulesView(ApiView):
    async def get(self, request: Request) -> Response:
        project = self.project(request)
        rules = [{"eventType": t, **r.model_dump()} for t, r in sorted(project.rules.items())]
        return self.reply({"projectId": project.projectId, "rules": rules})


@app.page("/api/rules/{event_type}")
class RuleView(ApiView):
    def _event_type(self, event_type: str) -> str:
        if not EVENT_TYPE_RE.match(event_type):
            raise ApiError(
                422,
                "invalid event type",
                [FieldError("eventType", f"must match {EVENT_TYPE_PATTERN}")],
            )
        return event_type

    async def put(self, request: Request, event_type: str) -> Response:
        project = self.project(request)
        rule = _parse(RuleModel, await self.json_body(request, max_bytes=4096))
        self._event_type(event_type)
        async with _one_change_at_a_time(project.projectId):
            # the project as of now: changes queued before this one may have added rules
            current = directory.get(project.projectId) or project
            if event_type not in current.rules:
                _check_room_for_a_rule(len(current.rules))
            updated = await registry.put_rule(project.projectId, event_type, rule)
        return self.reply({"eventType": event_type, **updated.rules[event_type].model_dump()})

    async def delete(self, request: Request, event_type: str) -> Response:
        project = self.project(request)
        if self._event_type(event_type) not in project.rules:
            raise ApiError(404, "no such rule", [FieldError("eventType", "has no rule")])
        async with _one_change_at_a_time(project.projectId):
            await registry.delete_rule(project.projectId, event_type)
        return self.reply({"eventType": event_type, "deleted": True})


@app.page("/api/settings")
class SettingsView(ApiView):
    async def get(self, request: Request) -> Response:
        return self.reply(self.project(request).settings.model_dump(mode="json"))

    async def put(self, request: Request) -> Response:
        project = self.project(request)
        # strict, finite, ranged and ordered (app.records): issue 10 finding 1
        new = _parse(ProjectSettings, await self.json_body(request, max_bytes=4096))
        async with _one_change_at_a_time(project.projectId):
            updated = await registry.put_settings(project.projectId, new)
        return self.reply(updated.settings.model_dump(mode="json"))
