"""The dead-letter index: records of the shared dead-letter topic, kept per project in MongoDB.

The dead-letter topic is shared by every project, and Kafka cannot list one project's records;
so every dead letter is also written to the `dead_letters` collection (agents/dead_letters.py)
with the project it belongs to, and the admin routes (web/dead_letters.py) list, inspect,
re-drive and purge from there.

A document's id is the position of the *original* record (`events-3-1042`: its topic without
the deployment prefix, partition, offset), not of the dead-letter record: the same record
dead-lettered twice — a crash before the offset commit, or a replay reading the log again —
is one document, and writing it again (`$setOnInsert`) keeps what an operator did to it
(re-driven, when). The project comes from the original value's `projectId` when it has one,
else from its key `"{projectId}:{leadKey}"`; a record with neither is kept under no project
and listed to nobody (it is still on the topic, 30 days).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.metrics import dead_letter_class, short_topic
from app.mongo import Mongo

__all__ = ["DeadLetterStore", "dead_letter_doc", "project_of_record"]

_PROJECT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def project_of_record(key: str | None, value: str | None) -> str | None:
    """The project a dead-lettered record belongs to, or None when it names none."""
    try:
        body = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        named = body.get("projectId")
        if named is None and isinstance(body.get("event"), dict):  # a lead command
            named = body["event"].get("projectId")
        if isinstance(named, str) and _PROJECT_ID.match(named):
            return named
    if key and ":" in key:
        prefix = key.split(":", 1)[0]
        if _PROJECT_ID.match(prefix):
            return prefix
    return None


def dead_letter_doc(
    raw: bytes | None, topic_prefix: str, dl_partition: int, dl_offset: int
) -> dict[str, Any]:
    """The document of one dead-letter record (its value as app/faults.py wrote it)."""
    try:
        body = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):  # not written by leadscore: keep it, under no project
        text = raw.decode(errors="replace") if raw is not None else None
        body = {"reason": "unreadable dead letter", "value": text}
    short = short_topic(str(body.get("topic") or "dead-letter"), topic_prefix)
    partition, offset = body.get("partition"), body.get("offset")
    if body.get("topic") is None or partition is None or offset is None:
        # no original position (a sink's refused change): the dead-letter record's own
        ident = f"dead-letter-{dl_partition}-{dl_offset}"
    else:
        ident = f"{short}-{partition}-{offset}"
    reason = str(body.get("reason") or "unknown")
    key, value = _text(body.get("key")), _text(body.get("value"))
    return {
        "_id": ident,
        "projectId": project_of_record(key, value),
        "reason": reason,
        "reasonClass": dead_letter_class(reason),
        "errors": body.get("errors") if isinstance(body.get("errors"), list) else [],
        "topic": short,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value,
        "deadLetteredAt": _when(body.get("deadLetteredAt")),
        "deadLetter": {"partition": dl_partition, "offset": dl_offset},
        "status": "open",
        "redriveCount": 0,
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else orjson.dumps(value).decode()


def _when(at: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(at), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it."""
    out = {k: v for k, v in doc.items() if k not in ("_id", "deadLetter")}
    out["id"] = doc["_id"]
    for name in ("deadLetteredAt", "redrivenAt"):
        if isinstance(out.get(name), datetime):
            out[name] = out[name].astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


class DeadLetterStore:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._indexed = False

    @property
    def _coll(self) -> Any:
        return self._mongo.db.dead_letters

    async def _ensure_indexes(self) -> None:
        if not self._indexed:
            await self._coll.create_indexes(
                [
                    IndexModel([("projectId", ASCENDING), ("deadLetteredAt", DESCENDING)]),
                    IndexModel([("projectId", ASCENDING), ("reasonClass", ASCENDING)]),
                ]
            )
            self._indexed = True

    async def add(self, doc: dict[str, Any]) -> None:
        """Idempotent: a document already there keeps its status."""
        await self._ensure_indexes()
        await self._coll.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    @staticmethod
    def query(project_id: str, reason: str | None, status: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {"projectId": project_id, "status": {"$ne": "purged"}}
        if reason:
            query["$or"] = [{"reasonClass": reason}, {"reason": reason}]
        if status:
            query["status"] = status
        return query

    async def page(self, query: dict[str, Any], limit: int, offset: int) -> list[dict[str, Any]]:
        cursor = (
            self._coll.find(query)
            .sort([("deadLetteredAt", DESCENDING), ("_id", ASCENDING)])
            .skip(offset)
            .limit(limit)
        )
        return [public(d) async for d in cursor]

    async def get(self, project_id: str, dl_id: str) -> dict[str, Any] | None:
        doc = await self._coll.find_one(
            {"_id": dl_id, "projectId": project_id, "status": {"$ne": "purged"}}
        )
        return None if doc is None else dict(doc)

    def matching(self, query: dict[str, Any], limit: int) -> AsyncIterator[dict[str, Any]]:
        return self._coll.find(query).sort([("_id", ASCENDING)]).limit(limit)

    async def mark_redriven(self, dl_id: str) -> None:
        await self._coll.update_one(
            {"_id": dl_id},
            {
                "$set": {"status": "redriven", "redrivenAt": datetime.now(UTC)},
                "$inc": {"redriveCount": 1},
            },
        )

    async def purge(self, query: dict[str, Any]) -> int:
        """Purged dead letters stay as bare markers (no record, no reason text): a replay reads
        the dead-letter topic again, and `add` must not list them anew."""
        result = await self._coll.update_many(
            {**query, "status": {"$ne": "purged"}},
            {
                "$set": {"status": "purged", "purgedAt": datetime.now(UTC)},
                "$unset": {"key": "", "value": "", "errors": "", "reason": ""},
            },
        )
        return int(result.modified_count)
