"""`GET /api/health`: 200 when Kafka and MongoDB answer, projects are loaded and no consumer is
stuck; 503 naming what is down, which consumer is stuck on a temporary fault, and which project's
record on the projects topic was skipped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from faust.web import Request, Response

from app import faults
from app.settings import settings
from app.topology import app, directory, mongo
from web.base import ApiView

__all__ = ["HealthView", "KafkaProbe"]

_CHECK_TIMEOUT = 3.0


class KafkaProbe:
    """Asks the cluster to describe itself through one admin client, kept between checks.

    A client is kept only once it has started and answered: after a failed start (Kafka down
    when the first check came) or a failed request, it is closed and the next check builds a
    new one — a client whose start failed never recovers, so health stayed degraded after
    Kafka came back (issue 10, finding 6b).
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._admin: AIOKafkaAdminClient | None = None

    async def check(self) -> None:
        admin = self._admin
        try:
            if admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000
                )
                await admin.start()
            await admin.describe_cluster()
        except BaseException:  # also when the check's timeout cancels it
            self._admin = None
            if admin is not None:
                with contextlib.suppress(Exception):
                    await admin.close()
            raise
        self._admin = admin

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


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
