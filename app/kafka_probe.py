"""A cheap, self-healing check that the Kafka cluster answers (for `/api/health`)."""

from __future__ import annotations

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
