"""`GET /metrics` (Prometheus text format) and the HTTP metrics of every request, on every role.

No credential: the metrics carry no project, lead or key (app/metrics.py keeps labels to route
templates, statuses and classes), so they are served like `/api/health`; an operator keeps the
path off the public load balancer (README, "Operating leadscore"). Requests are labelled with
the route *template* (`/api/leads/{lead_id}`), never the raw path, and a path that matches no
route is labelled `unmatched`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from faust.web import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.settings import settings
from app.topology import app
from web.base import ApiView

__all__ = ["MetricsView", "consumer_lag", "route_template"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return str(resource.canonical)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.http_request(
            request.method, route_template(request), status, time.perf_counter() - started
        )


def consumer_lag() -> Iterator[tuple[str, int, int]]:
    """(topic, partition, lag) of every partition of our own topics this process consumes."""
    try:
        consumer: Any = app.consumer
        assigned = consumer.assignment()
    except Exception:  # no consumer (ingest role) or not started yet
        return
    ours = settings.topic_prefix + "."
    for tp in sorted(assigned):
        if not tp.topic.startswith(ours):
            continue  # changelogs: Faust commits no offsets for them
        try:
            high = consumer.highwater(tp)
        except Exception:
            continue
        if high is None:
            continue  # nothing fetched from it yet
        # Faust keeps None for "nothing committed" and for a committed 0: both mean the start
        committed = consumer._committed_offset.get(tp) or 0
        yield (
            metrics.short_topic(tp.topic, settings.topic_prefix),
            tp.partition,
            max(0, high - committed),
        )


@app.page("/metrics")
class MetricsView(ApiView):
    async def get(self, request: Request) -> Response:
        return self.bytes(
            generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


metrics.watch_consumer_lag(consumer_lag)
app.web.web_app.middlewares.append(metrics_middleware)  # type: ignore[attr-defined]
