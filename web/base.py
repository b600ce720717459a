"""What every view shares: JSON responses, API errors as data, and authentication (SPEC 10).

Who is calling comes from one of: the deployment admin token (`Authorization: Bearer`), an API
key (`X-API-Key`, `Authorization: Bearer lss_…`, or the SDK's body field), or a login session
(`Authorization: Bearer lst_…` or the session cookie). What they may do is `app.access`'s.
Missing, unknown or revoked → 401; known but without the right → 403 (ADR 0016).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web_exceptions
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View
from pymongo.errors import PyMongoError

from app import metrics
from app.access import (
    LEGACY_KEY_PREFIX,
    ROLE_PERMISSIONS,
    Caller,
    Permission,
    key_permissions,
    looks_like_session_token,
)
from app.projects import ProjectRegistry
from app.ratelimit import RateLimits
from app.records import ProjectRecord
from app.settings import settings
from app.topology import audit_log, directory, key_usage, mongo, projects_topic, users
from core.events import FieldError
from core.storable import is_utf8

__all__ = [
    "CALLER",
    "CORS_ORIGIN",
    "MAX_PATH_PARAM_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_REQUEST_BYTES",
    "RATELIMIT_HEADERS",
    "SESSION_COOKIE",
    "ApiError",
    "ApiView",
    "audit",
    "path_param",
    "project_of",
    "query_int",
    "query_str",
    "registry",
]

SESSION_COOKIE = "leadscore_session"
CALLER = "leadscore.caller"  # request key: the authenticated Caller
CORS_ORIGIN = "leadscore.cors_origin"  # request key: an Origin this response may be shared with
RATELIMIT_HEADERS = "leadscore.ratelimit"  # request key: RateLimit-* headers for the response
_KEY_PREFIXES = ("lss_", "lsp_", LEGACY_KEY_PREFIX)
rate_limits = RateLimits(settings.rate_limit, settings.rate_limit_publishable)

MAX_REQUEST_BYTES = 1024 * 1024
"""The largest body any route takes (a batch): anything declaring more is refused with 413
before authentication, before a byte of it is read."""
DEPENDENCY_RETRY_AFTER_SECONDS = 5
MAX_QUERY_CHARS = 2048
MAX_PATH_PARAM_CHARS = 128

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as JSON: `{"error": ..., "fields": [{"field", "message"}...]}`."""

    def __init__(
        self,
        status: int,
        error: str,
        fields: Sequence[FieldError] = (),
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
        self.body: dict[str, Any] = {"error": error}
        if fields:
            self.body["fields"] = [f.as_json() for f in fields]
        if extra:
            self.body.update(extra)


async def _publish_project(key: bytes, value: bytes) -> None:
    delivery = await projects_topic.send(key=key, value=value)
    await delivery  # acknowledged by the broker before the caller hears "created"


class _Registry(ProjectRegistry):
    """The registry of a worker also applies its own changes to its directory at once."""

    async def _publish_latest(self, project_id: str) -> None:
        await super()._publish_latest(project_id)
        doc = await mongo.db.projects.find_one({"projectId": project_id})
        if doc is not None:
            directory.apply(ProjectRecord.from_mongo(doc))


registry = _Registry(mongo, _publish_project)


class ApiView(View):
    async def dispatch(self, request: Any) -> Any:
        try:
            _check_request_size(request)
            return await super().dispatch(request)
        except ApiError as exc:
            return self.reply(exc.body, status=exc.status, headers=exc.headers)
        except PyMongoError as exc:
            metrics.mongo_error("api")
            log.warning("MongoDB unavailable on %s %s: %r", request.method, request.path, exc)
            return self.reply(
                {"error": "MongoDB unavailable; retry", "dependency": "mongodb"},
                status=503,
                headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
            )
        except (KafkaError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("dependency unavailable on %s %s: %r", request.method, request.path, exc)
            return self.reply(
                {"error": "a dependency (Kafka or another worker) is unavailable; retry"},
                status=503,
                headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
            )
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return self.reply({"error": "internal error"}, status=500)

    def reply(
        self, body: Any, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return self.bytes(
            orjson.dumps(body), content_type="application/json", status=status, headers=headers
        )

    async def json_body(self, request: Request, *, max_bytes: int) -> Any:
        if (getattr(request, "content_length", None) or 0) > max_bytes:
            raise ApiError(413, f"request body larger than {max_bytes} bytes")
        try:
            raw = await request.read()
        except web_exceptions.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body larger than {max_bytes} bytes") from None
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body larger than {max_bytes} bytes")
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid JSON", [FieldError("body", str(exc))]) from None

    async def project(
        self,
        request: Request,
        api_key: str | None = None,
        field: str = "X-API-Key",
        *,
        need: Permission,
    ) -> ProjectRecord:
        """The project the caller acts on, if the caller has `need` there."""
        return project_of(await self.authorize(request, need, api_key=api_key, field=field))

    async def authorize(
        self,
        request: Request,
        need: Permission,
        api_key: str | None = None,
        field: str = "X-API-Key",
    ) -> Caller:
        """Authenticate, pick the project, check the right and the caller's rate limit."""
        if not directory.loaded:
            raise ApiError(503, "worker is starting")
        caller = await self._identify(request, api_key, field)
        if caller.kind == "admin" and caller.project_id is None:
            raise ApiError(
                403,
                "the admin token acts on a project only when X-Project-Id names it",
                [FieldError("X-Project-Id", "is required with the admin token")],
            )
        if need not in caller.permissions:
            raise ApiError(403, f"this credential may not {_WHAT[need]}")
        if caller.publishable:
            origin = request.headers.get("Origin", "")
            project = directory.get(caller.project_id or "")
            if project is None or origin not in project.settings.allowedOrigins:
                raise ApiError(
                    403,
                    "publishable keys are accepted only from the project's allowed origins",
                    [FieldError("Origin", "is not an allowed origin of the project")],
                )
            _stash(request, CORS_ORIGIN, origin)
        decision = rate_limits.hit(caller.limit_id, caller.publishable)
        _stash(request, RATELIMIT_HEADERS, decision.headers())
        if not decision.allowed:
            metrics.rate_limited("publishable" if caller.publishable else caller.kind)
            raise ApiError(429, "rate limit exceeded; retry later", headers=decision.headers())
        if caller.key is not None and caller.project_id is not None:
            key_usage.used(caller.project_id, caller.key.id)
        _stash(request, CALLER, caller)
        return caller

    async def require_admin(self, request: Request) -> Caller:
        """Deployment-wide routes: the admin token only (SPEC 10)."""
        if not directory.loaded:
            raise ApiError(503, "worker is starting")
        if not settings.admin_token:
            raise ApiError(403, "admin routes are disabled: set LEADSCORE_ADMIN_TOKEN")
        caller = await self._identify(request, None, "Authorization")
        if caller.kind != "admin":
            raise ApiError(403, "this route takes the deployment admin token")
        _stash(request, CALLER, caller)
        return caller

    async def session_caller(self, request: Request) -> Caller:
        """Routes about the logged-in user themselves (logout, password): a session only."""
        if not directory.loaded:
            raise ApiError(503, "worker is starting")
        caller = await self._identify(request, None, "Authorization", project_required=False)
        if caller.kind != "user":
            raise ApiError(403, "this route takes a login session")
        _stash(request, CALLER, caller)
        return caller

    async def _identify(
        self, request: Request, api_key: str | None, field: str, project_required: bool = True
    ) -> Caller:
        header_key = _header(request, "X-API-Key")
        bearer = _header(request, "Authorization")
        if bearer is not None:
            scheme, _, bearer = bearer.partition(" ")
            if scheme.lower() != "bearer" or not bearer.strip():
                raise ApiError(
                    401, "invalid credentials", [FieldError("Authorization", "must be Bearer")]
                )
            bearer = bearer.strip()
        cookie = _session_cookie(request)
        project_header = _header(request, "X-Project-Id")
        if bearer is not None and _is_admin_token(bearer):
            return _admin_caller(project_header)
        key = api_key or header_key or (bearer if _looks_like_key(bearer) else None)
        if key is not None:
            if not key.isascii():
                raise ApiError(401, "invalid API key", [FieldError(field, "is not valid")])
            found = directory.by_api_key(key)
            if found is None:
                raise ApiError(401, "invalid API key", [FieldError(field, "is not valid")])
            project, record = found
            return Caller(
                kind="key",
                actor={"kind": "key", "keyId": record.id, "prefix": record.prefix},
                project_id=project.projectId,
                permissions=key_permissions(record),
                key=record,
            )
        token = bearer if bearer is not None else cookie
        if bearer is None and cookie is not None:
            _check_cookie_origin(request)
        if token is None:
            raise ApiError(
                401,
                "missing credentials",
                [FieldError(field, "is required (or Authorization: Bearer, or a session)")],
            )
        if not looks_like_session_token(token):
            raise ApiError(401, "invalid credentials", [FieldError("Authorization", "unknown")])
        session = await users.session(token)
        if session is None:
            raise ApiError(
                401, "session expired or revoked", [FieldError("Authorization", "log in again")]
            )
        actor = {"kind": "user", "userId": session.user_id, "email": session.email}
        if not project_required:
            return Caller(
                kind="user", actor=actor, user_id=session.user_id, session_hash=session.token_hash
            )
        if project_header is not None:
            project_id = project_header
        elif len(session.roles) == 1:
            project_id = next(iter(session.roles))
        elif not session.roles:
            raise ApiError(403, "this user has no role in any project")
        else:
            raise ApiError(
                400,
                "this user has roles in several projects: name one",
                [FieldError("X-Project-Id", "is required")],
            )
        role = session.roles.get(project_id)
        if role is None or directory.get(project_id) is None:
            raise ApiError(404, "no such project", [FieldError("X-Project-Id", "is unknown")])
        return Caller(
            kind="user",
            actor=actor,
            project_id=project_id,
            permissions=ROLE_PERMISSIONS[role],
            user_id=session.user_id,
            role=role,
            session_hash=session.token_hash,
        )


def project_of(caller: Caller) -> ProjectRecord:
    """The project an authorized caller acts on, as this process knows it now."""
    project = directory.get(caller.project_id or "")
    if project is None:
        raise ApiError(404, "no such project", [FieldError("X-Project-Id", "is unknown")])
    return project


async def audit(caller: Caller, action: str, target: str, before: Any, after: Any) -> None:
    """Record a change in the audit log, in the caller's project, as the caller."""
    await audit_log.record(caller.project_id, caller.actor, action, target, before, after)


_WHAT: dict[Permission, str] = {
    "ingest": "send events",
    "read": "read this project's data",
    "rules": "change rules or automations",
    "settings": "change settings",
    "admin": "administer this project (keys, members, repairs, audit log)",
}


def _stash(request: Request, name: str, value: Any) -> None:
    """Per-request data for the response middleware (web/security.py); aiohttp requests are
    mappings for exactly this."""
    cast(Any, request)[name] = value


def _header(request: Request, name: str) -> str | None:
    """A header as text; header bytes that are not printable ASCII are refused (401), since no
    credential or project id contains them — never a 500 (issue #10)."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isprintable():
        raise ApiError(401, "invalid credentials", [FieldError(name, "is not valid")])
    return cast(str, value)


def _session_cookie(request: Request) -> str | None:
    """Our cookie only: other cookies of the same host may hold any bytes and are none of our
    business; a session cookie that is not printable ASCII is refused (401)."""
    raw = request.headers.get("Cookie")
    if raw is None:
        return None
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            if not value.isascii() or not value.isprintable():
                raise ApiError(401, "invalid credentials", [FieldError("Cookie", "is not valid")])
            return str(value)
    return None


def _check_cookie_origin(request: Request) -> None:
    """CSRF: a change made with the session cookie (the dashboard's fetches) must come from a
    page of this very host. The cookie is SameSite=Strict already; this also refuses a sibling
    site on the same registrable domain (which SameSite counts as same-site)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("Host", ""):
        raise ApiError(
            403,
            "a change made with the session cookie must come from this site",
            [FieldError("Origin", "is not this host")],
        )


def _looks_like_key(value: str | None) -> bool:
    return value is not None and value.startswith(_KEY_PREFIXES)


def _is_admin_token(given: str) -> bool:
    token = settings.admin_token
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def _admin_caller(project_header: str | None) -> Caller:
    """The deployment admin acts as an owner of the project named in X-Project-Id (so it can
    grant the first roles), and on deployment routes without one."""
    if project_header is not None and directory.get(project_header) is None:
        raise ApiError(404, "no such project", [FieldError("X-Project-Id", "is unknown")])
    return Caller(
        kind="admin",
        actor={"kind": "admin"},
        project_id=project_header,
        permissions=ROLE_PERMISSIONS["owner"] if project_header is not None else frozenset(),
    )


def _check_request_size(request: Request) -> None:
    """Refuse oversized requests before authentication reads a header or the body a byte."""
    if (getattr(request, "content_length", None) or 0) > MAX_REQUEST_BYTES:
        raise ApiError(413, f"request body larger than {MAX_REQUEST_BYTES} bytes")
    if len(request.query_string) > MAX_QUERY_CHARS:
        raise ApiError(
            400, "invalid query", [FieldError("query", f"at most {MAX_QUERY_CHARS} characters")]
        )


def path_param(value: str, field: str) -> str:
    """A key from the path (a lead id): 1-128 characters of valid UTF-8, as SPEC 2 allows."""
    if not 1 <= len(value) <= MAX_PATH_PARAM_CHARS or not is_utf8(value):
        raise ApiError(
            400,
            "invalid path",
            [FieldError(field, f"must be 1-{MAX_PATH_PARAM_CHARS} characters of UTF-8")],
        )
    return value


def query_str(request: Request, name: str, max_chars: int = MAX_PATH_PARAM_CHARS) -> str | None:
    """A string query parameter, bounded and valid UTF-8; None when absent or empty."""
    raw = request.query.get(name)
    if not raw:
        return None
    if len(raw) > max_chars or not is_utf8(raw):
        raise ApiError(
            400, "invalid query", [FieldError(name, f"at most {max_chars} characters of UTF-8")]
        )
    return raw


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = query_str(request, name, max_chars=24)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid query", [FieldError(name, "must be an integer")]) from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid query", [FieldError(name, f"must be between {lo} and {hi}")])
    return value
