"""Login, logout and password change: sessions for the dashboard (cookie) and scripts (bearer).

Failed logins are counted per e-mail and per client address: after a few each attempt is
answered slowly, after more they are refused (429) for a while (`app.ratelimit.LoginThrottle`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from faust.web import Request, Response

from app.ratelimit import LoginThrottle
from app.settings import settings
from app.topology import app, audit_log, users
from app.users import normalize_email, public_user
from core.events import FieldError
from web.base import SESSION_COOKIE, ApiError, ApiView
from web.users import MAX_PASSWORD, valid_password

__all__ = ["LoginView", "LogoutView", "PasswordView"]

throttle = LoginThrottle(
    settings.login_slow_after, settings.login_lock_after, settings.login_window
)


def _cookie(token: str, expires: datetime | None) -> str:
    """HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it),
    Secure unless LEADSCORE_COOKIE_SECURE=off, scoped to the API."""
    parts = [f"{SESSION_COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if settings.cookie_secure:
        parts.append("Secure")
    if expires is None:
        parts.append("Max-Age=0")
    else:
        parts.append(f"Max-Age={max(0, int(settings.session_ttl))}")
    return "; ".join(parts)


@app.page("/api/auth/login")
class LoginView(ApiView):
    async def post(self, request: Request) -> Response:
        body = await self.json_body(request, max_bytes=4096)
        email = body.get("email") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(email, str) or not email.strip() or len(email) > 320:
            raise ApiError(422, "invalid body", [FieldError("email", "is required")])
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
            raise ApiError(422, "invalid body", [FieldError("password", "is required")])
        address = getattr(request, "remote", None) or "unknown"
        who = [f"email:{normalize_email(email)}", f"ip:{address}"]
        delay, retry_after = throttle.check(who)
        if retry_after is not None:
            raise ApiError(
                429,
                "too many failed logins; try again later",
                headers={"Retry-After": str(retry_after)},
            )
        user = await users.verify_password(email, password)
        if user is None:
            throttle.failed(who)
            await asyncio.sleep(delay)
            raise ApiError(401, "wrong e-mail or password")
        throttle.succeeded(who[:1])  # the address keeps its count: others may be guessing
        token, expires = await users.start_session(user["userId"])
        response = self.reply(
            {"token": token, "expiresAt": expires.isoformat(), "user": public_user(user)}
        )
        response.headers["Set-Cookie"] = _cookie(token, expires)
        response.headers["Cache-Control"] = "no-store"
        return response


@app.page("/api/auth/logout")
class LogoutView(ApiView):
    async def post(self, request: Request) -> Response:
        caller = await self.session_caller(request)
        await users.revoke_session(caller.session_hash or "")
        response = self.reply({"loggedOut": True})
        response.headers["Set-Cookie"] = _cookie("", None)
        return response


@app.page("/api/auth/password")
class PasswordView(ApiView):
    async def put(self, request: Request) -> Response:
        """Change one's own password; every other session of the user ends."""
        caller = await self.session_caller(request)
        body = await self.json_body(request, max_bytes=4096)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid body", [FieldError("body", "must be a JSON object")])
        new = valid_password(body.get("newPassword"), "newPassword")
        current = body.get("currentPassword")
        email = caller.actor["email"]
        if not isinstance(current, str) or await users.verify_password(email, current) is None:
            raise ApiError(
                403, "the current password is wrong", [FieldError("currentPassword", "is wrong")]
            )
        await users.set_password(caller.user_id or "", new, keep_session=caller.session_hash)
        await audit_log.record(None, caller.actor, "user.password", email, None, None)
        return self.reply({"changed": True})
