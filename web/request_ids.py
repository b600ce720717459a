"""A request id on every HTTP request (issue #15): `X-Request-Id` in (when it is a sane token)
or a new one, echoed in the response, set for the logs of the request (app/logs.py), and one
log line per request with method, route template, status and duration (unless
LEADSCORE_ACCESS_LOG=off)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.logs import request_id
from app.settings import settings
from app.topology import app
from web.metrics import route_template

__all__ = ["HEADER", "request_id_middleware"]

HEADER = "X-Request-Id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # anything else could forge log lines
log = logging.getLogger("leadscore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    rid = given if _SANE.match(given) else uuid.uuid4().hex
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[HEADER] = rid
            raise
        status = response.status
        response.headers[HEADER] = rid
        return response
    finally:
        if settings.access_log:
            _access_line(request, status, started)
        request_id.reset(token)


def _access_line(request: web.Request, status: int, started: float) -> None:
    route = route_template(request)
    ms = (time.perf_counter() - started) * 1000
    log.info(
        "%s %s %s %.1f ms",
        request.method,
        route,
        status,
        ms,
        extra={"method": request.method, "route": route, "status": status, "duration_ms": ms},
    )


# first, so that the other middlewares' log lines carry the id too
app.web.web_app.middlewares.insert(0, request_id_middleware)  # type: ignore[attr-defined]
