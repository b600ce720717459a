"""What every response of every process carries, and the CORS preflight of the event routes.

- Security headers on every response, errors and Faust's own pages included: no MIME sniffing,
  no framing, no referrer, and a content security policy (strict for HTML pages; `default-src
  'none'` for everything else, which a browser only ever reads as data).
- CORS (SPEC 10): a preflight is answered only on the event routes, and only for an origin that
  some project lists in `allowedOrigins` (a preflight carries no key, so the project is not
  known yet); the POST itself is then accepted from a publishable key only if *its* project
  allows the origin (web/base.py), and only then is the answer shared with that origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app.topology import app, directory
from web.base import CORS_ORIGIN, RATELIMIT_HEADERS

__all__ = ["EVENT_PATHS", "PAGE_CSP"]

EVENT_PATHS = frozenset(
    {"/api/events", "/api/events/batch", "/api/ingest/event", "/api/events/ingest"}
)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"
ALLOWED_HEADERS = "Content-Type, X-API-Key"
PREFLIGHT_MAX_AGE = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and request.path in EVENT_PATHS:
        return _preflight(request)
    response = await handler(request)
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = (
            "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
        )
    if request.path in EVENT_PATHS:
        response.headers["Vary"] = "Origin"
    for name, value in (request.get(RATELIMIT_HEADERS) or {}).items():
        response.headers.setdefault(name, value)
    return response


def _preflight(request: web.Request) -> web.Response:
    origin = request.headers.get("Origin", "")
    method = request.headers.get("Access-Control-Request-Method", "")
    if method != "POST" or not directory.origin_allowed_anywhere(origin):
        return web.json_response(
            {
                "error": "origin not allowed",
                "fields": [{"field": "Origin", "message": "is not an allowed origin"}],
            },
            status=403,
            headers={"Vary": "Origin"},
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Vary": "Origin",
        },
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    # dashboard pages: same-origin, so a form post carries its Origin (with no-referrer a browser
    # sends `Origin: null`, and the CSRF check of web/dashboard/pages.py could not tell it apart)
    headers["Referrer-Policy"] = "same-origin" if request.path.startswith("/app") else "no-referrer"
    is_page = (response.content_type or "").startswith("text/html")
    headers["Content-Security-Policy"] = PAGE_CSP if is_page else DATA_CSP
    if request.path.startswith(("/api/auth/", "/api/keys")):
        headers["Cache-Control"] = "no-store"


def install(web_app: Any) -> None:
    web_app.middlewares.append(cors_middleware)
    web_app.on_response_prepare.append(_security_headers)


install(app.web.web_app)  # type: ignore[attr-defined]  # the aiohttp driver's Application
