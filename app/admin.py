"""Operator actions run outside a worker (CLI): they publish with a plain aiokafka producer."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from app.mongo import Mongo
from app.projects import ProjectRegistry
from app.records import ProjectRecord
from app.settings import settings
from app.topics import ensure_topics

__all__ = ["create_project"]


async def create_project(name: str) -> tuple[ProjectRecord, str]:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    mongo = Mongo(settings)
    await producer.start()
    try:

        async def publish(key: bytes, value: bytes) -> None:
            await producer.send_and_wait(settings.topic("projects"), key=key, value=value)

        return await ProjectRegistry(mongo, publish).create(name)
    finally:
        await producer.stop()
        mongo.close()
