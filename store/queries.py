"""The reads of `leads` and `score_history` that the views make (SPEC 8: lists, the leaderboard
and stage counts come from MongoDB and may lag the stream by the materialization delay).

Merged-away leads stay as tombstones (`merged: true`, see `store.plan`) and are never listed;
`LIVE` is the filter that says so. Every query starts with `projectId`, the leading field of
every index (`store.indexes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

__all__ = [
    "LIVE",
    "history",
    "history_of_project",
    "lead_document",
    "leads_page",
    "leads_query",
    "live_lead_id",
    "live_leads_among",
    "live_leads_of_project",
    "stage_counts",
]

LIVE = {"merged": {"$exists": False}}  # merged-away leads stay as tombstones; never listed

HISTORY_ORDER = [("timestampUs", 1), ("eventId", 1)]


def leads_query(
    project_id: str,
    *,
    stage: str | None = None,
    min_score: float | None = None,
    search: str | None = None,
) -> dict[str, Any]:
    """The filter of a lead list: live leads of the project, optionally of one stage, at or
    above a score, or matching a search term (a lead key, one of its aliases, or its email)."""
    query: dict[str, Any] = {"projectId": project_id, **LIVE}
    if stage is not None:
        query["leadStage"] = stage
    if min_score is not None:
        query["currentScore"] = {"$gte": min_score}
    if search is not None:
        query["$or"] = [{"leadId": search}, {"aliases": search}, {"email": search.lower()}]
    return query


async def leads_page(
    db: Any, query: dict[str, Any], order: list[tuple[str, int]], offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many leads match `query`, and the page of them in `order` (raw documents)."""
    total: int = await db.leads.count_documents(query)
    cursor = db.leads.find(query).sort(order).skip(offset).limit(limit)
    return total, [doc async for doc in cursor]


async def stage_counts(db: Any, project_id: str) -> dict[str, int]:
    """Live leads per stage (stages with no lead absent)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"projectId": project_id, **LIVE}},
        {"$group": {"_id": "$leadStage", "count": {"$sum": 1}}},
    ]
    return {row["_id"]: row["count"] async for row in db.leads.aggregate(pipeline)}


async def live_lead_id(db: Any, project_id: str, key: str) -> str | None:
    """The live lead whose key or one of whose aliases is `key`."""
    lead = await db.leads.find_one(
        {"projectId": project_id, "$or": [{"leadId": key}, {"aliases": key}], **LIVE},
        {"leadId": 1},
    )
    return None if lead is None else str(lead["leadId"])


async def history(
    db: Any,
    project_id: str,
    lead_id: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    with_project: bool = False,
) -> list[dict[str, Any]]:
    """A lead's history rows in time order (then eventId), without `_id` and `v` (nor
    `projectId` unless `with_project`, as the export shows it)."""
    hidden = {"_id": 0, "v": 0} if with_project else {"_id": 0, "v": 0, "projectId": 0}
    cursor = (
        db.score_history.find({"projectId": project_id, "leadId": lead_id}, hidden)
        .sort(HISTORY_ORDER)
        .skip(offset)
    )
    if limit is not None:
        cursor = cursor.limit(limit)
    return [row async for row in cursor]


async def lead_document(db: Any, project_id: str, lead_id: str) -> dict[str, Any] | None:
    """The lead's document as stored, tombstone or not."""
    doc: dict[str, Any] | None = await db.leads.find_one(
        {"projectId": project_id, "leadId": lead_id}
    )
    return doc


def live_leads_of_project(db: Any, project_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every live lead of the project, by leadId (a streaming cursor)."""
    cursor = db.leads.find({"projectId": project_id, **LIVE}).sort([("leadId", 1)])
    it: AsyncIterator[dict[str, Any]] = cursor.__aiter__()
    return it


def history_of_project(db: Any, project_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every history row of the project, by leadId then time then eventId (a streaming cursor)."""
    cursor = db.score_history.find({"projectId": project_id}).sort([("leadId", 1), *HISTORY_ORDER])
    it: AsyncIterator[dict[str, Any]] = cursor.__aiter__()
    return it


async def live_leads_among(db: Any, project_id: str, lead_ids: Iterable[str]) -> list[str]:
    """Which of `lead_ids` are live leads."""
    cursor = db.leads.find(
        {"projectId": project_id, "leadId": {"$in": list(lead_ids)}, **LIVE}, {"leadId": 1}
    )
    return [doc["leadId"] async for doc in cursor]
