"""Session fixtures: the real local stack (started through devstack unless KAFKA_BOOTSTRAP_SERVERS
and MONGO_URL point at running services), one shared worker, and per-test projects."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from tests.integration.support import Api, Deployment, WorkerProcess, create_project


@pytest.fixture(scope="session")
def stack() -> Iterator[tuple[str, str]]:
    import devstack

    info = devstack.ensure_up()
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", info.bootstrap_servers)
    os.environ.setdefault("MONGO_URL", info.mongo_url)
    try:
        yield info.bootstrap_servers, info.mongo_url
    finally:
        if info.started and not os.environ.get("LEADSCORE_KEEP_STACK"):
            devstack.shutdown()


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="session")
def deployment(stack: tuple[str, str]) -> Deployment:
    return Deployment.on(stack)


@pytest.fixture(scope="session")
async def worker(deployment: Deployment, work_dir: Path) -> AsyncIterator[WorkerProcess]:
    proc = WorkerProcess(deployment, work_dir, "main")
    proc.start()
    try:
        await proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def api(
    http: aiohttp.ClientSession,
    worker: WorkerProcess,
    deployment: Deployment,
    request: pytest.FixtureRequest,
) -> Api:
    """An API client bound to a fresh project of the shared worker."""
    _, key = await create_project(http, worker.url, deployment.admin_token, request.node.name[:100])
    return Api(http, worker.url, key)


@pytest.fixture(scope="session")
async def mongo_db(deployment: Deployment) -> AsyncIterator[object]:
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(
        deployment.mongo_url, tz_aware=True
    )
    yield client[deployment.prefix]
    client.close()
