"""MongoDB access: one motor client per process, and the indexes of `projects`.

The indexes of `leads` and `score_history` belong to the store (`store.indexes`)."""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import ASCENDING, IndexModel

from app.settings import Settings

__all__ = ["Mongo"]


class Mongo:
    """Created lazily on the running loop (motor binds to the loop of its first use)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AsyncIOMotorClient[Any] | None = None
        self._indexed = False

    @property
    def client(self) -> AsyncIOMotorClient[Any]:
        if self._client is None:
            self._client = AsyncIOMotorClient(
                self._settings.mongo_url,
                serverSelectionTimeoutMS=5_000,
                connectTimeoutMS=5_000,
                tz_aware=True,
            )
        return self._client

    @property
    def db(self) -> AsyncIOMotorDatabase[Any]:
        return self.client[self._settings.mongo_db]

    async def ping(self) -> None:
        await self.db.command("ping")

    async def ensure_indexes(self) -> None:
        if self._indexed:
            return
        db = self.db
        await db.projects.create_indexes(
            [
                IndexModel([("projectId", ASCENDING)], unique=True),
                IndexModel([("keys.hash", ASCENDING)]),
            ]
        )
        self._indexed = True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
