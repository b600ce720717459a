"""Users (created by the deployment admin) and their roles in projects (SPEC 10)."""

from __future__ import annotations

import re
from typing import Any

from faust.web import Request, Response

from app.access import ROLES, Role
from app.topology import app, audit_log, users
from app.users import UserExists, normalize_email
from core.events import FieldError
from web.base import ApiError, ApiView, audit

__all__ = ["MemberView", "MembersView", "UserSessionsView", "UsersView"]

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


def valid_email(value: Any) -> str:
    if not isinstance(value, str) or not EMAIL_RE.match(value.strip()):
        raise ApiError(422, "invalid body", [FieldError("email", "must be an e-mail address")])
    return normalize_email(value)


def valid_password(value: Any, field: str = "password") -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise ApiError(
            422,
            "invalid body",
            [FieldError(field, f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")],
        )
    return value


@app.page("/api/users")
class UsersView(ApiView):
    async def post(self, request: Request) -> Response:
        caller = await self.require_admin(request)
        body = await self.json_body(request, max_bytes=4096)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid body", [FieldError("body", "must be a JSON object")])
        email = valid_email(body.get("email"))
        password = valid_password(body.get("password"))
        try:
            user = await users.create_user(email, password)
        except UserExists:
            raise ApiError(
                409, "a user with this e-mail exists", [FieldError("email", "taken")]
            ) from None
        await audit_log.record(None, caller.actor, "user.create", email, None, user)
        return self.reply(user, status=201)


@app.page("/api/users/{email}/sessions")
class UserSessionsView(ApiView):
    async def delete(self, request: Request, email: str) -> Response:
        """End every session of a user (a lost laptop, a leaver): deployment admin only."""
        caller = await self.require_admin(request)
        user = await users.find_user(email)
        if user is None:
            raise ApiError(404, "no such user", [FieldError("email", "is unknown")])
        count = await users.revoke_sessions(user["userId"])
        await audit_log.record(None, caller.actor, "user.sessions.revoke", user["email"], None, {})
        return self.reply({"email": user["email"], "revokedSessions": count})


@app.page("/api/members")
class MembersView(ApiView):
    async def get(self, request: Request) -> Response:
        caller = await self.authorize(request, "admin")
        return self.reply({"members": await users.members(caller.project_id or "")})


@app.page("/api/members/{email}")
class MemberView(ApiView):
    async def put(self, request: Request, email: str) -> Response:
        caller = await self.authorize(request, "admin")
        body = await self.json_body(request, max_bytes=1024)
        role = body.get("role") if isinstance(body, dict) else None
        if role not in ROLES:
            raise ApiError(422, "invalid body", [FieldError("role", "one of " + ", ".join(ROLES))])
        return await self._set(caller, email, role)

    async def delete(self, request: Request, email: str) -> Response:
        caller = await self.authorize(request, "admin")
        return await self._set(caller, email, None)

    async def _set(self, caller: Any, email: str, role: Role | None) -> Response:
        project_id: str = caller.project_id
        user = await users.find_user(email)
        if user is None:
            raise ApiError(404, "no such user", [FieldError("email", "is unknown")])
        current = next((r["role"] for r in user["roles"] if r["projectId"] == project_id), None)
        if current is None and role is None:
            raise ApiError(404, "not a member of this project", [FieldError("email", "no role")])
        if "owner" in (role, current) and caller.role not in ("owner", None):
            raise ApiError(403, "only an owner may grant or take away the owner role")
        if caller.kind == "key" and "owner" in (role, current):
            raise ApiError(403, "only an owner may grant or take away the owner role")
        changed = await users.set_role(email, project_id, role)
        if changed is None:
            raise ApiError(404, "no such user", [FieldError("email", "is unknown")])
        before, after = changed
        await audit(caller, "member.put" if role else "member.delete", user["email"], before, after)
        return self.reply({"email": user["email"], "role": after})
