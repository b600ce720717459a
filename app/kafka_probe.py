"""A cheap, self-healing check that the Kafka cluster answers (for `/api/health`)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["KafkaProbe"]


class KafkaProbe:
    """Asks the cluster to describe itself through one admin client, kept between checks.

    A client is kept only once it has started and answered: after a failed start (Kafka down
    when the first check came) or a failed request, it is closed and the next check builds a
    new one — a client whose start failed never recovers, so health stayed degraded after
    Kafka came back (issue 10, finding 6b).
    """

    CHECK_LIMIT = 5.0
    """Seconds one check may take before it counts as failed (its client is then rebuilt)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._admin: AIOKafkaAdminClient | None = None
        self._inflight: asyncio.Future[None] | None = None

    async def check(self) -> None:
        """Concurrent callers share one check in flight: a burst of health requests (the access
        matrix sends dozens at once) used to build a client each while none was kept, and the
        burst timed itself out on a busy machine. A caller that gives up (its own timeout) does
        not cancel the shared check; the check bounds itself (CHECK_LIMIT)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(
                asyncio.wait_for(self._check_once(), self.CHECK_LIMIT)
            )
            # read by whoever still waits; marked read here so a check whose callers all gave up
            # logs no "exception was never retrieved"
            self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(self._inflight)

    async def _check_once(self) -> None:
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
