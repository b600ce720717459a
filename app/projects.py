"""Projects (tenants): their registry in MongoDB and their directory on every worker.

MongoDB is where a project is changed (atomically, with a version); every change is then
published, whole, to the compacted projects topic. Every worker tails that topic into memory
(`ProjectDirectory`), so authenticating a request or scoring an event never queries MongoDB.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from app.access import SCOPES, KeyKind, KeyRecord, Scope, hash_secret, new_key, new_key_id
from app.access import shown_prefix as _shown_prefix
from app.faults import is_temporary
from app.mongo import Mongo
from app.records import ProjectRecord, ProjectSettings, RuleModel
from app.settings import Settings

__all__ = ["KeyLimitReached", "ProjectDirectory", "ProjectRegistry"]

log = logging.getLogger(__name__)

Publish = Callable[[bytes, bytes], Awaitable[None]]


class KeyLimitReached(Exception):
    """The project already has as many keys as a project may hold."""


class ProjectDirectory(Service):
    """All projects, in memory, kept current from the compacted projects topic."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._topic = settings.topic("projects")
        self._by_id: dict[str, ProjectRecord] = {}
        self._by_key_hash: dict[str, tuple[str, KeyRecord]] = {}
        self._origins: dict[str, set[str]] = {}  # allowed origin -> projects allowing it
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

    def by_api_key(self, api_key: str) -> tuple[ProjectRecord, KeyRecord] | None:
        """The project and key record of a key; None for unknown and revoked keys alike (a
        revocation removes the key from the project record, so this is all a process needs)."""
        found = self._by_key_hash.get(hash_secret(api_key))
        if found is None:
            return None
        project = self._by_id.get(found[0])
        return None if project is None else (project, found[1])

    def origin_allowed_anywhere(self, origin: str) -> bool:
        """Whether any project allows this browser origin (preflights carry no key)."""
        return bool(self._origins.get(origin))

    def all(self) -> list[ProjectRecord]:
        return list(self._by_id.values())

    def apply(self, record: ProjectRecord) -> None:
        """Keep the newest version; records can reach the topic out of version order."""
        current = self._by_id.get(record.projectId)
        if current is not None and current.version >= record.version:
            return
        if current is not None:
            for key in current.keys:
                self._by_key_hash.pop(key.hash, None)
            for origin in current.settings.allowedOrigins:
                self._origins.get(origin, set()).discard(record.projectId)
        self._by_id[record.projectId] = record
        for key in record.keys:
            self._by_key_hash[key.hash] = (record.projectId, key)
        for origin in record.settings.allowedOrigins:
            self._origins.setdefault(origin, set()).add(record.projectId)

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
        except Exception as exc:  # parsing is pure: whatever it raises is the record's fault
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
        """A new project with its first key: a secret key with every scope, shown once."""
        first, api_key = _key_record("first key", "secret", list(SCOPES))
        record = ProjectRecord(
            projectId="prj_" + secrets.token_hex(8),
            name=name,
            keys=[first],
            createdAt=datetime.now(UTC).isoformat(),
        )
        await self._mongo.ensure_indexes()
        await self._mongo.db.projects.insert_one(record.to_mongo())
        await self._publish_latest(record.projectId)
        return record, api_key

    async def add_key(
        self, project_id: str, name: str, kind: KeyKind, scopes: list[Scope], max_keys: int
    ) -> tuple[KeyRecord, str]:
        """Issue a key; the key itself is returned once and never stored."""
        record, api_key = _key_record(name, kind, scopes)

        def add(d: dict[str, Any]) -> None:
            if len(d["keys"]) >= max_keys:
                raise KeyLimitReached(project_id)
            d["keys"].append(record.model_dump(mode="json"))

        await self._update(project_id, add)
        return record, api_key

    async def revoke_key(self, project_id: str, key_id: str) -> KeyRecord | None:
        """Remove a key from its project; every directory drops it when the record arrives."""
        before, _after = await self.change(
            project_id, lambda d: d.update(keys=[k for k in d["keys"] if k["id"] != key_id])
        )
        return next((k for k in before.keys if k.id == key_id), None)

    async def put_rule(
        self, project_id: str, event_type: str, rule: RuleModel
    ) -> tuple[ProjectRecord, ProjectRecord]:
        """Returns the project before and after (for the audit log), like every change."""
        return await self.change(
            project_id, lambda d: d["rules"].update({event_type: rule.model_dump()})
        )

    async def delete_rule(
        self, project_id: str, event_type: str
    ) -> tuple[ProjectRecord, ProjectRecord]:
        return await self.change(project_id, lambda d: d["rules"].pop(event_type, None))

    async def put_settings(
        self, project_id: str, new: ProjectSettings
    ) -> tuple[ProjectRecord, ProjectRecord]:
        return await self.change(
            project_id, lambda d: d.update(settings=new.model_dump(mode="json"))
        )

    async def _update(
        self, project_id: str, change: Callable[[dict[str, Any]], Any]
    ) -> ProjectRecord:
        return (await self.change(project_id, change))[1]

    async def change(
        self, project_id: str, change: Callable[[dict[str, Any]], Any]
    ) -> tuple[ProjectRecord, ProjectRecord]:
        """Read, change, write back if nobody else wrote meanwhile (optimistic; retried).
        Returns the project before and after, which the audit log records.

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
                return current, updated
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


def _key_record(name: str, kind: KeyKind, scopes: list[Scope]) -> tuple[KeyRecord, str]:
    api_key = new_key(kind)
    record = KeyRecord(
        id=new_key_id(),
        name=name,
        kind=kind,
        prefix=_shown_prefix(api_key),
        scopes=[] if kind == "publishable" else sorted(set(scopes), key=SCOPES.index),
        hash=hash_secret(api_key),
        createdAt=datetime.now(UTC).isoformat(),
    )
    return record, api_key
