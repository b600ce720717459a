"""The local stack devstack brings up is the real thing: a Kafka broker that creates topics and
round-trips records through aiokafka, and a MongoDB-wire server that motor writes to and reads
from; the outage helpers stop and restart them without losing data."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import ServerSelectionTimeoutError

import devstack
from devstack.layout import LOCAL_DIR_ENV, Layout
from devstack.stack import KAFKA_ENV, MONGO_ENV

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def devstack_info() -> Iterator[devstack.StackInfo]:
    """The session's shared stack; stopped at the end only if this fixture had to start it."""
    info = devstack.ensure_up()
    yield info
    if info.started:
        devstack.shutdown()


@pytest.fixture(scope="module")
def private_stack(
    devstack_info: devstack.StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[devstack.StackInfo]:
    """A second stack of our own for the outage tests, so that stopping its services never
    disturbs the shared one (nor a worker other tests keep on it). It reuses the shared jar cache.
    The environment stays pointed at it until the end of this module: keep these tests last."""
    shared = Layout.from_env()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOCAL_DIR_ENV, str(tmp_path_factory.mktemp("devstack")))
        patch.delenv(KAFKA_ENV, raising=False)
        patch.delenv(MONGO_ENV, raising=False)
        private = Layout.from_env()
        if shared.kafka_libs_stamp.is_file():
            private.kafka_libs.parent.mkdir(parents=True)
            private.kafka_libs.symlink_to(shared.kafka_libs, target_is_directory=True)
            shutil.copy(shared.kafka_libs_stamp, private.kafka_libs_stamp)
        info = devstack.ensure_up()
        try:
            assert info.started
            yield info
        finally:
            assert devstack.shutdown()
            assert devstack.status() == []


async def _create_topic(bootstrap: str) -> str:
    topic = f"devstack-smoke-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _round_trip(bootstrap: str, topic: str, value: bytes) -> bytes | None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"lead-1", value=value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        while True:
            record = await asyncio.wait_for(consumer.getone(), timeout=30)
            if record.value == value:
                return record.value
    finally:
        await consumer.stop()


async def test_kafka_creates_a_topic_and_round_trips_a_record(
    devstack_info: devstack.StackInfo,
) -> None:
    topic = await _create_topic(devstack_info.bootstrap_servers)
    try:
        assert await _round_trip(devstack_info.bootstrap_servers, topic, b'{"score": 1}') == (
            b'{"score": 1}'
        )
    finally:
        await _delete_topic(devstack_info.bootstrap_servers, topic)


async def test_mongo_inserts_and_finds_a_document(devstack_info: devstack.StackInfo) -> None:
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(devstack_info.mongo_url)
    collection = client["devstack_smoke"][f"leads_{uuid.uuid4().hex[:12]}"]
    try:
        await collection.insert_one({"_id": "lead-1", "score": 42.5})
        assert await collection.find_one({"_id": "lead-1"}) == {"_id": "lead-1", "score": 42.5}
    finally:
        await collection.drop()
        client.close()


def test_ensure_up_again_is_a_no_op(devstack_info: devstack.StackInfo) -> None:
    again = devstack.ensure_up()
    assert (again.bootstrap_servers, again.mongo_url) == (
        devstack_info.bootstrap_servers,
        devstack_info.mongo_url,
    )
    assert not again.started
    assert all(row.up for row in devstack.status())


# -- outage helpers, on the private stack (keep these last: see `private_stack`) ---------------


def _row(name: str) -> devstack.ServiceStatus:
    return next(row for row in devstack.status() if row.name == name)


async def test_mongo_restart_keeps_data_on_the_same_url(
    private_stack: devstack.StackInfo,
) -> None:
    client: AsyncIOMotorClient[dict[str, object]] = AsyncIOMotorClient(
        private_stack.mongo_url, serverSelectionTimeoutMS=1000
    )
    collection = client["devstack_smoke"]["restart"]
    try:
        await collection.insert_one({"_id": "lead-1", "score": 7})
        await asyncio.to_thread(devstack.stop_mongo)
        assert not _row("mongo").alive
        with pytest.raises(ServerSelectionTimeoutError):
            await collection.find_one({"_id": "lead-1"})
        assert await asyncio.to_thread(devstack.start_mongo) == private_stack.mongo_url
        assert await collection.find_one({"_id": "lead-1"}) == {"_id": "lead-1", "score": 7}
    finally:
        client.close()


async def test_a_killed_broker_restarts_with_its_data(private_stack: devstack.StackInfo) -> None:
    bootstrap = private_stack.bootstrap_servers
    topic = await _create_topic(bootstrap)
    assert await _round_trip(bootstrap, topic, b"before") == b"before"
    await asyncio.to_thread(devstack.kill_broker, 1)
    assert not _row("kafka-1").alive
    await asyncio.to_thread(devstack.restart_broker, 1)
    assert _row("kafka-1").up
    assert await _round_trip(bootstrap, topic, b"after") == b"after"
