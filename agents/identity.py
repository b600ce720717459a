"""The identity agent: one owner per email, decided on the email's own partition (SPEC 5).

Claims arrive keyed by "{projectId}:{email}", so every claim for one email is handled in order
by one agent. The claim whose identify entered the log first (its record's Kafka timestamp, then
eventId) owns the email (promote) — the "first claimant" of SPEC 5 — and every other claimant is
merged into it, whatever order the claims reach this agent in; a replay ranks them the same.
Replies go to the claimant's partition through lead-commands; all are idempotent, so a claim
processed twice after a crash gives the same answer.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from faust.types import EventT, StreamT

from agents.erasure import released
from agents.outbox import is_current, send_command
from app.faults import isolate
from app.faust_app import app
from app.settings import settings
from app.topology import claims_topic

__all__ = ["email_owners", "identity_agent"]

email_owners = app.Table(
    "email-owners",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    help='"{projectId}:{email}" -> {lead, timestamp, eventId} of the owning claim',
)


def _order(record: dict[str, Any]) -> tuple[int, str]:
    return (record["timestamp"], record["eventId"])


@app.agent(claims_topic)
async def identity_agent(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        # a claim it cannot read is dead-lettered; a temporary fault is retried (ADR 0015)
        await isolate("identity", event.message, partial(_decide, event))


async def _decide(event: EventT[bytes]) -> None:
    """Decide one claim; safe to run again (the owner table and the replies are idempotent)."""
    claim = orjson.loads(event.value)
    if not isinstance(claim, dict):
        raise TypeError("an identity claim must be a JSON object")  # dead-lettered by isolate
    if not is_current(claim):
        return  # from an earlier epoch: the replay re-sends it
    if released(claim, event.message.key, email_owners):
        return  # its owner was erased (agents/erasure.py)
    pid: str = claim["projectId"]
    claimant: str = claim["claimant"]
    held = email_owners.get(event.message.key)
    owner = orjson.loads(held) if held is not None else None
    reply = {
        k: claim.get(k) for k in ("projectId", "email", "name", "company", "timestamp", "eventId")
    }
    if owner is None or owner["lead"] == claimant or _order(claim) < _order(owner):
        if owner is not None and owner["lead"] != claimant:
            # An earlier identify of the same email turned up: it owns the email, and the
            # lead that held it (the same person) is merged into it. Ownership thus
            # depends only on the log, not on which claim arrived first.
            await send_command(
                f"{pid}:{owner['lead']}".encode(),
                {**reply, "command": "merge", "into": claimant},
            )
        new_owner = {
            "lead": claimant,
            "timestamp": claim["timestamp"],
            "eventId": claim["eventId"],
        }
        if owner != new_owner:
            email_owners[event.message.key] = orjson.dumps(new_owner)
        await send_command(f"{pid}:{claimant}".encode(), {**reply, "command": "promote"})
    else:
        await send_command(
            f"{pid}:{claimant}".encode(), {**reply, "command": "merge", "into": owner["lead"]}
        )
