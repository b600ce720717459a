"""Operator actions run outside a worker (CLI): they publish with a plain aiokafka producer."""

from __future__ import annotations

from typing import Any, cast

from aiokafka import AIOKafkaProducer

from app.access import Role
from app.audit import AuditLog
from app.mongo import Mongo
from app.projects import ProjectRegistry
from app.records import ProjectRecord
from app.settings import settings
from app.topics import ensure_topics
from app.users import UserExists, UserStore

__all__ = ["create_project", "create_user"]


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


async def create_user(
    email: str, password: str, project_id: str | None, role: str
) -> dict[str, Any]:
    """The first user of a deployment, from the command line; audited as the operator."""
    if "@" not in email or len(password) < 10:
        raise ValueError("need an e-mail address and a password of at least 10 characters")
    mongo = Mongo(settings)
    try:
        if (
            project_id is not None
            and await mongo.db.projects.find_one({"projectId": project_id}) is None
        ):
            raise ValueError(f"no project {project_id}")
        store = UserStore(mongo, settings)
        audit = AuditLog(mongo)
        actor = {"kind": "cli"}
        try:
            user = await store.create_user(email, password)
        except UserExists:
            raise ValueError(f"a user {email} exists already") from None
        await audit.record(None, actor, "user.create", user["email"], None, user)
        if project_id is not None:
            await store.set_role(email, project_id, cast(Role, role))
            await audit.record(project_id, actor, "member.put", user["email"], None, role)
            user["roles"] = [{"projectId": project_id, "role": role}]
        return user
    finally:
        mongo.close()
