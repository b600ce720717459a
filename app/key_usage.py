"""Keys' "last used" times, collected in memory and written to MongoDB in batches.

A write per request would put MongoDB on the ingest path; instead each process remembers the
latest use of each key and writes them all every `LEADSCORE_KEY_USAGE_FLUSH` seconds (and when
it stops). The listing is therefore up to that long behind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from mode import Service
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from app.mongo import Mongo
from app.settings import Settings

__all__ = ["KeyUsage"]

log = logging.getLogger(__name__)


class KeyUsage(Service):
    def __init__(self, mongo: Mongo, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mongo = mongo
        self._interval = settings.key_usage_flush
        self._pending: dict[str, tuple[str, datetime]] = {}  # keyId -> (projectId, last use)

    def used(self, project_id: str, key_id: str) -> None:
        self._pending[key_id] = (project_id, datetime.now(UTC))

    async def last_used(self, key_ids: list[str]) -> dict[str, str]:
        found = {
            d["keyId"]: d["lastUsedAt"]
            async for d in self._mongo.db.key_usage.find({"keyId": {"$in": key_ids}})
        }
        for key_id in key_ids:  # this process's uses not written yet
            if key_id in self._pending:
                mine = self._pending[key_id][1]
                theirs = found.get(key_id)
                if theirs is None or _aware(theirs) < mine:
                    found[key_id] = mine
        return {k: _aware(v).isoformat() for k, v in found.items()}

    async def on_start(self) -> None:
        self.add_future(self._flush_periodically())

    async def on_stop(self) -> None:
        await self.flush()

    async def _flush_periodically(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except PyMongoError as exc:  # kept for the next round; never fails a request
                log.warning("could not write key usage: %r", exc)

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await self._mongo.db.key_usage.bulk_write(
                [
                    UpdateOne(
                        {"keyId": key_id},
                        {"$max": {"lastUsedAt": at}, "$set": {"projectId": project_id}},
                        upsert=True,
                    )
                    for key_id, (project_id, at) in pending.items()
                ],
                ordered=False,
            )
        except PyMongoError:
            for key_id, value in pending.items():
                self._pending.setdefault(key_id, value)
            raise


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
