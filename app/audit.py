"""The audit log (SPEC 10): every change to rules, settings, automations, keys, users and roles,
with who made it, when, and the value before and after, in MongoDB `audit_log`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from app.mongo import Mongo

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._indexed = False

    async def record(
        self,
        project_id: str | None,
        actor: dict[str, str],
        action: str,
        target: str,
        before: Any,
        after: Any,
    ) -> None:
        """Write one entry; `projectId` None marks a deployment-wide change (a new user)."""
        if not self._indexed:
            await self._mongo.db.audit_log.create_indexes(
                [IndexModel([("projectId", ASCENDING), ("at", DESCENDING)])]
            )
            self._indexed = True
        await self._mongo.db.audit_log.insert_one(
            {
                "projectId": project_id,
                "at": datetime.now(UTC),
                "actor": actor,
                "action": action,
                "target": target,
                "before": before,
                "after": after,
            }
        )

    async def page(self, project_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """Newest first."""
        cursor = (
            self._mongo.db.audit_log.find({"projectId": project_id})
            .sort([("at", DESCENDING), ("_id", DESCENDING)])
            .skip(offset)
            .limit(limit)
        )
        return [
            {
                "id": str(doc["_id"]),
                "at": doc["at"].isoformat(),
                "actor": doc["actor"],
                "action": doc["action"],
                "target": doc["target"],
                "before": doc.get("before"),
                "after": doc.get("after"),
            }
            async for doc in cursor
        ]
