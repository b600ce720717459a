"""The firing agent: decides each automation firing once, for ever (SPEC 9, ADR 0019).

Candidates arrive keyed by firing id; inserting them into `automation_firings` (unique `_id`)
is the decision: the first insert wins, every later candidate with that id — a redo after a
crash, a replay epoch, a rescore, a second worker — is a duplicate key and is dropped. Stale
candidates are stored as `skipped` and never delivered. Deliveries are then made by
`app.delivery.Deliveries`, which this module starts on every worker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from faust.types import StreamT

from app import faults, metrics
from app.delivery import Deliveries
from app.firings import EPOCH
from app.settings import settings
from app.topology import app, directory, firing_log, firings_topic

__all__ = ["deliveries", "firing_agent", "firing_document"]

log = logging.getLogger(__name__)

deliveries = Deliveries(settings, firing_log, directory)
app.service(deliveries)  # type: ignore[arg-type]


def firing_document(
    candidate: dict[str, Any], now: datetime, lease: tuple[str, datetime] | None = None
) -> dict[str, Any]:
    """The MongoDB document of a decided firing; with `lease`, already held by this process's
    deliveries (so the first attempt needs no claim)."""
    for name in ("firingId", "projectId", "ruleId", "leadId", "day"):
        if not isinstance(candidate[name], str):
            raise TypeError(f"{name} must be a string")
    stale = bool(candidate.get("stale"))
    return {
        "_id": candidate["firingId"],
        "projectId": candidate["projectId"],
        "ruleId": candidate["ruleId"],
        "ruleName": candidate.get("ruleName"),
        "trigger": candidate.get("trigger"),
        "leadId": candidate["leadId"],
        "day": candidate["day"],
        "event": candidate.get("event"),
        "lead": candidate.get("lead"),
        "status": "skipped" if stale else "pending",
        "reason": "the causing event is older than maxTriggerAge" if stale else None,
        "firedAt": now,
        "attemptCount": 0,
        "attempts": [],
        "nextAttemptAt": EPOCH,
        "leaseUntil": lease[1] if lease and not stale else EPOCH,
        "leaseOwner": lease[0] if lease and not stale else None,
    }


async def decide(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert a batch of candidates (first wins), retrying MongoDB faults: a candidate is never
    skipped because the database was away. Returns the new firings, leased to this process's
    deliveries when it has room for them."""
    # a burst waits (a moment at most) for this process's deliveries to make room
    await deliveries.wait_room([_rule_key(c) for c in candidates])
    now = datetime.now(UTC)
    token = deliveries.lease_for_new(len(candidates))
    lease = (token, now + timedelta(seconds=deliveries.lease)) if token else None
    docs: dict[str, dict[str, Any]] = {}
    for c in candidates:
        try:
            # a destination whose queue is full gets its new firings unleased: claimed later
            held = lease if lease and deliveries.takes(*_rule_key(c)) else None
            docs.setdefault(c["firingId"], firing_document(c, now, held))
        except (KeyError, TypeError) as exc:  # not ours: written by another client
            await _dead_letter(orjson.dumps(c), f"invalid automation firing candidate: {exc!r}")
    batch = list(docs.values())
    try:
        # temporary faults (MongoDB away, an election) are retried for as long as they last
        inserted = await faults.retry_temporary("firing", lambda: firing_log.insert_new(batch))
    except Exception as exc:  # permanent: MongoDB refuses these documents; park them
        for doc in batch:
            await _dead_letter(orjson.dumps(doc, default=str), f"firing not storable: {exc!r}")
        return []
    for doc in inserted:
        metrics.automation_firing(doc["status"])  # pending (to deliver) or skipped (stale)
    return [doc for doc in inserted if doc["leaseOwner"] is not None]


def _rule_key(candidate: Any) -> tuple[str, str]:
    """(projectId, ruleId) of a candidate; blanks for one that is not (it is dead-lettered)."""
    if not isinstance(candidate, dict):
        return ("", "")
    return (str(candidate.get("projectId", "")), str(candidate.get("ruleId", "")))


async def _dead_letter(value: bytes, reason: str) -> None:
    """A record on the firings topic that is not a candidate (another client wrote it): parked
    with the reason; the others of its batch are decided."""
    log.error("automation firing candidate dead-lettered: %s", reason)
    await faults.dead_letter_value(
        key=None,
        reason=reason,
        topic=settings.topic("automation-firings"),
        value=value.decode(errors="replace")[:10_000],
    )


@app.agent(firings_topic, concurrency=1)
async def firing_agent(stream: StreamT[bytes]) -> None:
    async for batch in stream.take(500, within=0.02):
        candidates = []
        for value in batch:
            try:
                candidates.append(orjson.loads(value))
            except orjson.JSONDecodeError as exc:
                await _dead_letter(value, f"invalid JSON: {exc}")
        deliveries.submit(await decide(candidates))
