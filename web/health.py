"""`GET /api/health`: 200 when Kafka and MongoDB answer, 503 naming what is down."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from faust.web import Request, Response

from app.settings import settings
from app.topology import app, directory, mongo
from web.base import ApiView

__all__ = ["HealthView"]

_CHECK_TIMEOUT = 3.0
_admin: AIOKafkaAdminClient | None = None


async def _kafka_ok() -> None:
    global _admin
    if _admin is None:
        _admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=3000
        )
        await _admin.start()
    await _admin.describe_cluster()


async def _check(probe: asyncio.Future[None] | asyncio.Task[None] | object) -> str:
    try:
        await asyncio.wait_for(probe, _CHECK_TIMEOUT)  # type: ignore[arg-type]
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


@app.page("/api/health")
class HealthView(ApiView):
    async def get(self, request: Request) -> Response:
        kafka, mongodb = await asyncio.gather(_check(_kafka_ok()), _check(mongo.ping()))
        body = {
            "status": (
                "degraded"
                if kafka != "ok" or mongodb != "ok"
                else "ok"
                if directory.loaded
                else "starting"
            ),
            "kafka": kafka,
            "mongodb": mongodb,
            "projectsLoaded": directory.loaded,
            "worker": app.conf.canonical_url.human_repr()
            if hasattr(app.conf.canonical_url, "human_repr")
            else str(app.conf.canonical_url),
            "appVersion": settings.app_version,
        }
        return self.reply(body, status=200 if body["status"] == "ok" else 503)
