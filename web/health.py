"""`GET /api/health`: 200 when Kafka and MongoDB answer, projects are loaded and no consumer is
stuck; 503 naming what is down, which consumer is stuck on a temporary fault, and which project's
record on the projects topic was skipped."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.web import Request, Response

from app import faults
from app.kafka_probe import KafkaProbe
from app.settings import settings
from app.topology import app, directory, mongo
from web.base import ApiView

__all__ = ["HealthView"]

_CHECK_TIMEOUT = 3.0


_kafka = KafkaProbe(settings.kafka_bootstrap_servers)


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, _CHECK_TIMEOUT)
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


@app.page("/api/health")
class HealthView(ApiView):
    async def get(self, request: Request) -> Response:
        kafka, mongodb = await asyncio.gather(_check(_kafka.check()), _check(mongo.ping()))
        stuck = faults.stuck()
        skipped = dict(directory.skipped)
        problems = kafka != "ok" or mongodb != "ok" or bool(stuck) or bool(skipped)
        body = {
            "status": ("degraded" if problems else "ok" if directory.loaded else "starting"),
            "kafka": kafka,
            "mongodb": mongodb,
            "projectsLoaded": directory.loaded,
            # consumers retrying a temporary fault for more than faults.STUCK_AFTER_SECONDS
            "stuck": stuck,
            # projects whose latest record on the projects topic could not be applied
            "skippedProjects": skipped,
            "worker": app.conf.canonical_url.human_repr()
            if hasattr(app.conf.canonical_url, "human_repr")
            else str(app.conf.canonical_url),
            "appVersion": settings.app_version,
        }
        return self.reply(body, status=200 if body["status"] == "ok" else 503)
