"""`GET /api/stream`: the project's lead changes as server-sent events (issue 13).

Authenticated like every read (a key with `read`, or a session), filtered to the caller's
project. Each event is `event: lead.created | lead.stage_changed | lead.score_changed` with the
notice of `app.live` as JSON data. A stream lasts at most `MAX_STREAM_SECONDS` (then the client
reconnects and is authenticated again, so a revoked credential stops reading within that), and a
comment line every `HEARTBEAT_SECONDS` keeps proxies from closing an idle one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import cast

import orjson
from aiohttp import web
from faust.web import Request
from multidict import CIMultiDict

from app.live import LiveFeed
from app.settings import settings
from app.topology import app, lead_changes_topic
from web.base import ApiError, ApiView

__all__ = ["StreamView", "feed"]

HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 300.0
READY_WAIT_SECONDS = 10.0

feed = LiveFeed()
_ready = asyncio.Event()


@app.task
async def _read_lead_changes() -> None:
    """Every worker's own view of the lead changes, from the end of the topic."""
    await feed.run(settings.kafka_bootstrap_servers, lead_changes_topic.get_topic_name(), _ready)


@app.page("/api/stream")
class StreamView(ApiView):
    async def get(self, request: Request) -> web.StreamResponse:
        request = _with_project_query(request)
        project = await self.project(request, need="read")
        try:
            await asyncio.wait_for(_ready.wait(), READY_WAIT_SECONDS)
        except TimeoutError:
            raise ApiError(503, "live feed not ready; retry", retry_after=5) from None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        if request.method == "HEAD":  # the headers only: no stream follows
            await response.prepare(request)  # type: ignore[arg-type]
            await response.write_eof()
            return response
        sub = feed.subscribe(project.projectId)
        try:
            await response.prepare(request)  # type: ignore[arg-type]
            await response.write(b"retry: 2000\n: connected\n\n")
            ends = time.monotonic() + MAX_STREAM_SECONDS
            while not sub.dropped and time.monotonic() < ends:
                try:
                    notice = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                await response.write(
                    b"event: "
                    + notice["type"].encode()
                    + b"\ndata: "
                    + orjson.dumps(notice)
                    + b"\n\n"
                )
        except ConnectionResetError:
            pass  # the client went away
        finally:
            feed.unsubscribe(sub)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _with_project_query(request: Request) -> Request:
    """`?project=` stands for the `X-Project-Id` header: a browser's EventSource cannot send
    headers, and a user with roles in several projects must name one."""
    wanted = request.query.get("project")
    if not wanted or "X-Project-Id" in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers["X-Project-Id"] = wanted
    return cast(Request, cast(web.Request, request).clone(headers=headers))
