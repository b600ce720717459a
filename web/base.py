"""What every view shares: JSON responses, API errors as data, and authentication."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web_exceptions
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View
from pymongo.errors import PyMongoError

from app.projects import ProjectRegistry
from app.records import ProjectRecord
from app.settings import settings
from app.topology import directory, mongo, projects_topic
from core.events import FieldError
from core.storable import is_utf8

__all__ = [
    "MAX_PATH_PARAM_CHARS",
    "MAX_QUERY_CHARS",
    "MAX_REQUEST_BYTES",
    "ApiError",
    "ApiView",
    "path_param",
    "query_int",
    "query_str",
    "registry",
]

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
        retry_after: int | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
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

    def project(
        self, request: Request, api_key: str | None = None, field: str = "X-API-Key"
    ) -> ProjectRecord:
        """The project of the request's API key (`X-API-Key`, or the SDK's body field)."""
        if not directory.loaded:
            raise ApiError(503, "worker is starting")
        key = api_key if api_key is not None else request.headers.get("X-API-Key")
        if not key:
            raise ApiError(401, "missing API key", [FieldError(field, "is required")])
        if not is_utf8(key):  # undecodable header bytes arrive as lone surrogates
            raise ApiError(401, "invalid API key", [FieldError(field, "is not valid")])
        project = directory.by_api_key(key)
        if project is None:
            raise ApiError(401, "invalid API key", [FieldError(field, "is not valid")])
        return project

    def require_admin(self, request: Request) -> None:
        token = settings.admin_token
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise ApiError(403, "admin routes are disabled: set LEADSCORE_ADMIN_TOKEN")
        if not is_utf8(given) or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(
                401, "invalid admin token", [FieldError("Authorization", "is not valid")]
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
