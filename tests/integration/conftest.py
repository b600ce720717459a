"""Fixtures of the automation tests (tests/integration/test_automation_*.py): real receivers, a
real SMTP server, and a worker with a pinned "now" and a fast delivery schedule, per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.automation_support import (
    Receiver,
    SmtpServer,
    fast_delivery_env,
)
from tests.integration.support import (
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    start_worker,
)


@pytest.fixture(scope="module")
async def smtp() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(scope="module")
async def auto_worker(
    stack: tuple[str, str], smtp: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    deployment = Deployment.on(stack, **fast_delivery_env(smtp.port))
    proc = await start_worker(deployment, Path(tmp_path_factory.mktemp("auto")), "auto")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def auto_api(
    http: aiohttp.ClientSession, auto_worker: WorkerProcess, request: pytest.FixtureRequest
) -> Api:
    _, key = await create_project(
        http, auto_worker.url, auto_worker.deployment.admin_token, request.node.name[:100]
    )
    return Api(http, auto_worker.url, key)
