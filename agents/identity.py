"""The identity agent: one owner per email, decided on the email's own partition (SPEC 5).

Claims arrive keyed by "{projectId}:{email}", so every claim for one email is handled in order
by one agent. The claim whose identify entered the log first (its record's Kafka timestamp, then
eventId) owns the email (promote) — the "first claimant" of SPEC 5 — and every other claimant is
merged into it, whatever order the claims reach this agent in; a replay ranks them the same.
Replies go to the claimant's partition through lead-commands; all are idempotent, so a claim
processed twice after a crash gives the same answer. A claimant that cannot take the email it
was given (merged away meanwhile, or it owns another one) sends a `release` on the same
partition: the email is then nobody's, and that claim never takes it again (docs/adr/0009).
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.types import StreamT

from agents.outbox import is_current, send_command
from app.faust_app import app
from app.settings import settings
from app.topology import claims_topic

__all__ = ["email_owners", "identity_agent"]

email_owners = app.Table(
    "email-owners",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    help='"{projectId}:{email}" -> {lead, timestamp, eventId} of the owning claim (lead None:'
    " nobody's), released: [[lead, eventId]] claims given back",
)


def _order(record: dict[str, Any]) -> tuple[int, str]:
    return (record["timestamp"], record["eventId"])


def _claim_id(record: dict[str, Any]) -> list[str]:
    return [record["claimant"] if "claimant" in record else record["lead"], record["eventId"]]


@app.agent(claims_topic)
async def identity_agent(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        claim = orjson.loads(event.value)
        if not is_current(claim):
            continue  # from an earlier epoch: the replay re-sends it
        key = event.message.key
        held = email_owners.get(key)
        entry: dict[str, Any] = orjson.loads(held) if held is not None else {"lead": None}
        released: list[list[str]] = entry.get("released", [])
        if claim.get("release"):
            _release(key, entry, claim)
        elif _claim_id(claim) in released:
            continue  # a claim redone after its claimant gave the email back: already answered
        else:
            await _decide(key, entry if entry["lead"] is not None else None, released, claim)


def _release(key: bytes, entry: dict[str, Any], release: dict[str, Any]) -> None:
    """A claimant gave the email back (its promote reached a lead that had been merged away or
    owns another email): the email is nobody's, unless it already moved to another claim. The
    released claim is remembered, so a redo of it (after a rebalance) cannot take it again."""
    claim_id = _claim_id(release)
    released = entry.get("released", [])
    if claim_id in released:
        return
    owned = entry["lead"] is not None and _claim_id(entry) == claim_id
    email_owners[key] = orjson.dumps(
        {
            **(entry if not owned else {"lead": None}),
            "released": sorted([*released, claim_id]),
        }
    )


async def _decide(
    key: bytes, owner: dict[str, Any] | None, released: list[list[str]], claim: dict[str, Any]
) -> None:
    pid: str = claim["projectId"]
    claimant: str = claim["claimant"]
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
        new_owner: dict[str, Any] = {
            "lead": claimant,
            "timestamp": claim["timestamp"],
            "eventId": claim["eventId"],
        }
        if released:
            new_owner["released"] = released
        if owner is None or {k: owner.get(k) for k in new_owner} != new_owner:
            email_owners[key] = orjson.dumps(new_owner)
        await send_command(f"{pid}:{claimant}".encode(), {**reply, "command": "promote"})
    else:
        await send_command(
            f"{pid}:{claimant}".encode(), {**reply, "command": "merge", "into": owner["lead"]}
        )
