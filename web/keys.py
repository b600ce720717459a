"""API keys of a project: create (shown once), list, revoke (SPEC 10). Owners, admins and keys
with the `admin` scope manage keys."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.access import SCOPES, KeyKind, Scope
from app.projects import KeyLimitReached
from app.settings import settings
from app.topology import app, key_usage
from core.events import FieldError
from web.base import ApiError, ApiView, audit, project_of, registry

__all__ = ["GenerateApiKeyView", "KeyView", "KeysView", "LegacyProjectKeysView"]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: KeyKind = "secret"
    scopes: list[Scope] = Field(default_factory=list, max_length=len(SCOPES))

    @model_validator(mode="after")
    def _scopes_fit_kind(self) -> NewKey:
        if self.kind == "secret" and not self.scopes:
            raise ValueError("a secret key needs at least one scope: " + ", ".join(SCOPES))
        if self.kind == "publishable" and set(self.scopes) - {"ingest"}:
            raise ValueError("a publishable key can only send events (scope ingest)")
        return self


def _parse_new_key(body: Any) -> NewKey:
    try:
        return NewKey.model_validate(body)
    except ValidationError as exc:
        fields = [
            FieldError(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()
        ]
        raise ApiError(422, "invalid key", fields) from None


async def _create(view: ApiView, request: Request, defaults: dict[str, Any] | None) -> Response:
    caller = await view.authorize(request, "admin")
    body = await view.json_body(request, max_bytes=4096)
    if defaults is not None:  # the older routes: every field optional
        body = {**defaults, **(body if isinstance(body, dict) else {})}
    new = _parse_new_key(body)
    try:
        record, api_key = await registry.add_key(
            caller.project_id or "", new.name, new.kind, new.scopes, settings.max_keys_per_project
        )
    except KeyLimitReached:
        raise ApiError(
            409,
            f"a project holds at most {settings.max_keys_per_project} keys; revoke one first",
        ) from None
    await audit(caller, "key.create", record.id, None, record.listing())
    return view.reply(
        {**record.listing(), "projectId": caller.project_id, "key": api_key, "apiKey": api_key},
        status=201,
    )


_EVERY_SCOPE = {"name": "generated key", "kind": "secret", "scopes": list(SCOPES)}


@app.page("/api/keys")
class KeysView(ApiView):
    async def post(self, request: Request) -> Response:
        return await _create(self, request, None)

    async def get(self, request: Request) -> Response:
        caller = await self.authorize(request, "admin")
        keys = project_of(caller).keys
        used = await key_usage.last_used([k.id for k in keys])
        return self.reply({"keys": [{**k.listing(), "lastUsedAt": used.get(k.id)} for k in keys]})


@app.page("/api/keys/{key_id}")
class KeyView(ApiView):
    async def delete(self, request: Request, key_id: str) -> Response:
        """Revoke: the key leaves the project record, which every process applies within
        moments (the projects topic); another project's key id is simply not found."""
        caller = await self.authorize(request, "admin")
        if all(k.id != key_id for k in project_of(caller).keys):
            raise ApiError(404, "no such key", [FieldError("id", "is not a key of this project")])
        revoked = await registry.revoke_key(caller.project_id or "", key_id)
        if revoked is None:
            raise ApiError(404, "no such key", [FieldError("id", "is not a key of this project")])
        await audit(caller, "key.revoke", key_id, revoked.listing(), None)
        return self.reply({"id": key_id, "revoked": True})


@app.page("/api/auth/generate-api-key")
class GenerateApiKeyView(ApiView):
    """Alias of the replaced system: a new key (by default secret, every scope) as `apiKey`."""

    async def post(self, request: Request) -> Response:
        return await _create(self, request, _EVERY_SCOPE)


@app.page("/api/projects/current/keys")
class LegacyProjectKeysView(ApiView):
    """The route keys were issued on before `POST /api/keys`: same as generate-api-key."""

    async def post(self, request: Request) -> Response:
        return await _create(self, request, _EVERY_SCOPE)
