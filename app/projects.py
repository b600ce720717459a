"""Projects (tenants): their registry in MongoDB and their directory on every worker.

MongoDB is where a project is changed (atomically, with a version); every change is then
published, whole, to the compacted projects topic. Every worker tails that topic into memory
(`ProjectDirectory`), so authenticating a request or scoring an event never queries MongoDB.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from app.faults import is_temporary
from app.mongo import Mongo
from app.records import ProjectRecord, ProjectSettings, RuleModel
from app.settings import Settings

__all__ = ["ProjectDirectory", "ProjectRegistry", "hash_api_key", "new_api_key"]

Publish = Callable[[bytes, bytes], Awaitable[None]]
log = logging.getLogger(__name__)


def new_api_key() -> str:
    return "lsk_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


class ProjectDirectory(Service):
    """All projects, in memory, kept current from the compacted projects topic."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._topic = settings.topic("projects")
        self._by_id: dict[str, ProjectRecord] = {}
        self._by_key_hash: dict[str, str] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tp = TopicPartition(self._topic, 0)
        self._position = 0
        self._advanced = asyncio.Condition()
        self._loaded = asyncio.Event()
        self.skipped: dict[str, str] = {}
        """record key (the projectId) → why its latest record was skipped (`/api/health`)."""

    # -- lookups -----------------------------------------------------------------------------
    def get(self, project_id: str) -> ProjectRecord | None:
        return self._by_id.get(project_id)

    def by_api_key(self, api_key: str) -> ProjectRecord | None:
        pid = self._by_key_hash.get(hash_api_key(api_key))
        return None if pid is None else self._by_id.get(pid)

    def all(self) -> list[ProjectRecord]:
        return list(self._by_id.values())

    def apply(self, record: ProjectRecord) -> None:
        """Keep the newest version; records can reach the topic out of version order."""
        current = self._by_id.get(record.projectId)
        if current is not None and current.version >= record.version:
            return
        if current is not None:
            for h in current.keyHashes:
                self._by_key_hash.pop(h, None)
        self._by_id[record.projectId] = record
        for h in record.keyHashes:
            self._by_key_hash[h] = record.projectId

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        self.add_future(self._tail())
        await self.sync(timeout=60.0)
        self._loaded.set()

    async def wait_loaded(self) -> None:
        """Block until the initial load of the topic is complete (agents start before services)."""
        await self._loaded.wait()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def receive(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the topic; one that does not parse is skipped and remembered.

        The topic is read by every process at start-up: a record that cannot be applied must
        never stop them (SPEC 12). The project keeps its last good record, and `/api/health`
        reports the skip, naming the project, until a good record for it arrives.
        """
        name = key.decode(errors="replace") if key else "(no key)"
        if value is None:
            return  # a tombstone: projects are never deleted through the topic
        try:
            record = ProjectRecord.model_validate(orjson.loads(value))
        except ValueError as exc:  # orjson's and pydantic's errors are ValueErrors
            reason = " ".join(str(exc).split())[:300]
            log.error("projects topic: record of %s skipped: %s", name, reason)
            self.skipped[name] = reason
            return
        self.skipped.pop(name, None)
        self.apply(record)

    async def _tail(self) -> None:
        assert self._consumer is not None
        while not self.should_stop:
            try:
                batches = await self._consumer.getmany(self._tp, timeout_ms=500)
                if not batches:
                    position = await self._consumer.position(self._tp)
                    self._position = max(self._position, position)
            except Exception as exc:
                if not is_temporary(exc):
                    raise
                log.warning("projects topic: temporary fault, retrying: %r", exc)
                await asyncio.sleep(1.0)
                continue
            for message in batches.get(self._tp, []):
                self.receive(message.key, message.value)
                self._position = message.offset + 1
            async with self._advanced:
                self._advanced.notify_all()

    async def sync(self, timeout: float = 10.0) -> None:
        """Wait until every project record published before this call has been applied."""
        assert self._consumer is not None
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]

        async def caught_up() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self._position >= end)

        await asyncio.wait_for(caught_up(), timeout)


class ProjectRegistry:
    """Changes to projects: atomic in MongoDB, then published so every directory converges."""

    def __init__(self, mongo: Mongo, publish: Publish) -> None:
        self._mongo = mongo
        self._publish = publish

    async def create(self, name: str) -> tuple[ProjectRecord, str]:
        api_key = new_api_key()
        record = ProjectRecord(
            projectId="prj_" + secrets.token_hex(8),
            name=name,
            keyHashes=[hash_api_key(api_key)],
            createdAt=datetime.now(UTC).isoformat(),
        )
        await self._mongo.ensure_indexes()
        await self._mongo.db.projects.insert_one(record.to_mongo())
        await self._publish_latest(record.projectId)
        return record, api_key

    async def add_key(self, project_id: str) -> str:
        api_key = new_api_key()
        await self._update(
            project_id, lambda d: d.update(keyHashes=[*d["keyHashes"], hash_api_key(api_key)])
        )
        return api_key

    async def put_rule(self, project_id: str, event_type: str, rule: RuleModel) -> ProjectRecord:
        return await self._update(
            project_id, lambda d: d["rules"].update({event_type: rule.model_dump()})
        )

    async def delete_rule(self, project_id: str, event_type: str) -> ProjectRecord:
        return await self._update(project_id, lambda d: d["rules"].pop(event_type, None))

    async def put_settings(self, project_id: str, new: ProjectSettings) -> ProjectRecord:
        return await self._update(
            project_id, lambda d: d.update(settings=new.model_dump(mode="json"))
        )

    async def _update(
        self, project_id: str, change: Callable[[dict[str, Any]], Any]
    ) -> ProjectRecord:
        """Read, change, write back if nobody else wrote meanwhile (optimistic; retried).

        Not a `$set` on `rules.<eventType>`: event types may contain `.`, which MongoDB would
        read as a path. Rules are stored as a list and changed whole.
        """
        projects = self._mongo.db.projects
        for _ in range(50):
            doc = await projects.find_one({"projectId": project_id})
            if doc is None:
                raise KeyError(project_id)
            current = ProjectRecord.from_mongo(doc)
            data = current.model_dump(mode="json")
            change(data)
            data["version"] = current.version + 1
            updated = ProjectRecord.model_validate(data)
            result = await projects.replace_one(
                {"projectId": project_id, "version": current.version}, updated.to_mongo()
            )
            if result.matched_count == 1:
                await self._publish_latest(project_id)
                return updated
        raise RuntimeError(f"project {project_id} kept changing under concurrent updates")

    async def _publish_latest(self, project_id: str) -> None:
        """Publish until the newest version is the last record (writers may interleave)."""
        published = -1
        while True:
            doc = await self._mongo.db.projects.find_one({"projectId": project_id})
            if doc is None:
                raise KeyError(project_id)
            record = ProjectRecord.from_mongo(doc)
            if record.version <= published:
                return
            await self._publish(project_id.encode(), record.to_wire())
            published = record.version
