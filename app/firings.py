"""The automation log in MongoDB (`automation_firings`): the "already fired" truth and the
delivery schedule (ADR 0019).

One document per firing id (`_id`): inserting it is deciding the firing, so a second insert of the
same id — from a redo, another worker, a replay epoch or a rescore — fails on the primary key and
changes nothing. The document also holds the delivery's state: `status`, `nextAttemptAt`, a lease
(`leaseOwner`, `leaseUntil`) taken with one atomic find-and-modify, and every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from app.mongo import Mongo

__all__ = ["EPOCH", "STATUSES", "FiringLog"]

STATUSES = ("pending", "delivered", "failed", "skipped")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DUPLICATE_KEY = 11000
_MAX_ATTEMPTS_KEPT = 50  # a redelivered firing keeps its history, bounded


class FiringLog:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._indexed = False

    @property
    def _col(self) -> Any:
        return self._mongo.db.automation_firings

    async def ensure_indexes(self) -> None:
        if self._indexed:
            return
        await self._col.create_indexes(
            [
                IndexModel([("status", ASCENDING), ("nextAttemptAt", ASCENDING)]),
                IndexModel(
                    [("projectId", ASCENDING), ("ruleId", ASCENDING), ("firedAt", DESCENDING)]
                ),
                IndexModel([("projectId", ASCENDING), ("leadId", ASCENDING)]),
            ]
        )
        self._indexed = True

    async def insert_new(self, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert firings; those whose id exists already are dropped (first wins). Returns the
        documents this call inserted."""
        if not docs:
            return []
        await self.ensure_indexes()
        try:
            await self._col.insert_many(list(docs), ordered=False)
            return list(docs)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            duplicate = {e["index"] for e in errors}
            return [d for i, d in enumerate(docs) if i not in duplicate]

    async def claim_due(
        self, token: str, now: datetime, lease: float, limit: int
    ) -> list[dict[str, Any]]:
        """Take up to `limit` due pending deliveries for `lease` seconds under `token`.

        Per document atomic (the conditional update re-checks "pending, due, lease expired" on
        each document), so two processes never hold the same firing at once; a crashed
        holder's lease simply runs out. Three round trips per batch, not per firing.
        """
        due = {"status": "pending", "nextAttemptAt": {"$lte": now}, "leaseUntil": {"$lte": now}}
        ids = [d["_id"] async for d in self._col.find(due, {"_id": 1}).limit(limit)]
        if not ids:
            return []
        await self._col.update_many(
            {"_id": {"$in": ids}, **due},
            {"$set": {"leaseOwner": token, "leaseUntil": now + timedelta(seconds=lease)}},
        )
        return [d async for d in self._col.find({"_id": {"$in": ids}, "leaseOwner": token})]

    @staticmethod
    def postponed(doc: dict[str, Any], at: datetime) -> UpdateOne:
        """Give a claimed delivery back without an attempt (breaker open, destination busy)."""
        return UpdateOne(
            {"_id": doc["_id"], "leaseOwner": doc["leaseOwner"]},
            {"$set": {"nextAttemptAt": at, "leaseUntil": EPOCH, "leaseOwner": None}},
        )

    @staticmethod
    def attempted(
        doc: dict[str, Any], attempt: dict[str, Any], status: str, next_at: datetime | None
    ) -> UpdateOne:
        """An attempt's record; applies only while the lease is still ours."""
        change: dict[str, Any] = {
            "status": status,
            "leaseUntil": EPOCH,
            "leaseOwner": None,
            "lastError": attempt.get("error"),
            "updatedAt": attempt["at"],
        }
        if next_at is not None:
            change["nextAttemptAt"] = next_at
        if status == "delivered":
            change["deliveredAt"] = attempt["at"]
        return UpdateOne(
            {"_id": doc["_id"], "leaseOwner": doc["leaseOwner"]},
            {
                "$set": change,
                "$inc": {"attemptCount": 1},
                "$push": {"attempts": {"$each": [attempt], "$slice": -_MAX_ATTEMPTS_KEPT}},
            },
        )

    async def write(self, ops: Sequence[UpdateOne]) -> None:
        """Apply attempts and postponements in one unordered bulk write."""
        if ops:
            await self._col.bulk_write(list(ops), ordered=False)

    async def list(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        status: str | None = None,
        lead_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"projectId": project_id}
        if rule_id is not None:
            query["ruleId"] = rule_id
        if status is not None:
            query["status"] = status
        if lead_id is not None:
            query["leadId"] = lead_id
        cursor = self._col.find(query, {"attempts": 0}).sort("firedAt", DESCENDING).limit(limit)
        return [d async for d in cursor]

    async def get(self, project_id: str, firing_id: str) -> dict[str, Any] | None:
        return await self._col.find_one({"_id": firing_id, "projectId": project_id})

    async def redeliver(
        self, project_id: str, *, firing_id: str | None = None, rule_id: str | None = None
    ) -> int:
        """Make failed firings pending again with a fresh set of attempts; their history stays."""
        query: dict[str, Any] = {"projectId": project_id, "status": "failed"}
        if firing_id is not None:
            query["_id"] = firing_id
        if rule_id is not None:
            query["ruleId"] = rule_id
        result = await self._col.update_many(
            query,
            {
                "$set": {
                    "status": "pending",
                    "attemptCount": 0,
                    "nextAttemptAt": EPOCH,
                    "leaseUntil": EPOCH,
                    "leaseOwner": None,
                }
            },
        )
        return int(result.modified_count)
