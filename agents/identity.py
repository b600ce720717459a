"""The identity agent: one owner per email, decided on the email's own partition (SPEC 5).

Claims arrive keyed by "{projectId}:{email}", so every claim for one email is handled in order
by one agent. The claim whose identify entered the log first (its record's Kafka timestamp, then
eventId) owns the email (promote) — the "first claimant" of SPEC 5 — and every other claimant is
merged into it, whatever order the claims reach this agent in; a replay ranks them the same.
Replies go to the claimant's partition through lead-commands; all are idempotent, so a claim
processed twice after a crash gives the same answer. An owner is tentative until its lead
`confirm`s (it took the email); later claims wait meanwhile. A claimant that cannot take the
email it was given (merged away meanwhile, or its earlier identify's claim replaced it) sends
`release` instead: the email goes to the first waiting claim or to nobody, and that claim never
takes it again (docs/adr/0009).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
import orjson
from faust.types import EventT, StreamT

from agents.outbox import send_command
from app import wire
from app.faults import dead_letter, isolate
from app.faust_app import app
from app.settings import settings
from app.topology import claims_topic, email_owners

__all__ = ["email_owners", "identity_agent"]


def _order(record: dict[str, Any]) -> tuple[int, str]:
    return (record["timestamp"], record["eventId"])


def _claim_id(record: dict[str, Any]) -> list[str]:
    return [record["claimant"] if "claimant" in record else record["lead"], record["eventId"]]


def _answer_id(record: wire.Confirm | wire.Release) -> list[str]:
    return [record.lead, record.event_id]


def _load(held: bytes | None) -> dict[str, Any]:
    """The entry of an email: `owner` (the owning claim or None), `confirmed` (its lead took
    it), `waiting` (later claims held until the owner confirms or releases), `released`.
    Claims are kept as they travel (`app.wire.Claim`, camelCase)."""
    if held is None:
        return {"owner": None, "confirmed": False, "waiting": [], "released": []}
    data: dict[str, Any] = orjson.loads(held)
    if "owner" not in data:  # written before owners confirmed: final
        owner = None
        if data.get("lead") is not None:
            owner = {"claimant": data["lead"], "timestamp": data["timestamp"]}
            owner["eventId"] = data["eventId"]
        return {"owner": owner, "confirmed": True, "waiting": [], "released": []}
    return data


async def _reply(claim: dict[str, Any], into: str | None = None) -> None:
    """Answer a kept claim's lead: promote, or merge into `into`."""
    key = f"{claim['projectId']}:{claim['claimant']}".encode()
    fields = {
        "project_id": claim["projectId"],
        "email": claim["email"],
        "event_id": claim["eventId"],
        "timestamp": claim["timestamp"],
        "name": claim.get("name"),
        "company": claim.get("company"),
    }
    await send_command(
        key, wire.Promote(**fields) if into is None else wire.Merge(**fields, into=into)
    )


@app.agent(claims_topic)
async def identity_agent(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        # a message it cannot read is dead-lettered; a temporary fault is retried (ADR 0015)
        await isolate("identity", event.message, partial(_decide, event))


async def _decide(event: EventT[bytes]) -> None:
    """Apply one claim, confirm or release to its email's entry; safe to run again (the entry
    and the replies are idempotent)."""
    try:
        record = wire.decode_claim(event.value, settings.app_version)
    except wire.WireError as exc:
        await dead_letter(event.message, str(exc))  # names the field
        return
    if record is None:
        return  # from an earlier epoch: the replay re-sends it
    key = event.message.key
    held = email_owners.get(key)
    entry = _load(held)
    if isinstance(record, wire.Release):
        await _on_release(entry, record)
    elif isinstance(record, wire.Confirm):
        await _on_confirm(entry, record)
    else:
        await _on_claim(entry, msgspec.to_builtins(record))
    value = orjson.dumps(entry)
    if value != held:
        email_owners[key] = value


async def _on_claim(entry: dict[str, Any], claim: dict[str, Any]) -> None:
    claim_id = _claim_id(claim)
    if claim_id in entry["released"]:
        return  # redone after its claimant gave the email back: answered already
    owner = entry["owner"]
    if owner is None:
        entry.update(owner=claim, confirmed=False)
        await _reply(claim)
    elif owner["claimant"] == claim["claimant"]:
        if _claim_id(owner) != claim_id and _order(claim) < _order(owner):
            entry.update(owner=claim, confirmed=False)  # the lead's earlier identify
        await _reply(claim)  # (a redo; the lead takes only its pending claim)
    elif _order(claim) < _order(owner):
        # An earlier identify of the same email turned up: it owns the email, and the lead
        # that held it (the same person) is merged into it. Ownership thus depends only on
        # the log, not on which claim arrived first.
        await _reply({**claim, "claimant": owner["claimant"]}, into=claim["claimant"])
        if entry["confirmed"]:  # the waiting claims were merged into that lead: answered
            entry["waiting"] = []
        entry.update(owner=claim, confirmed=False)
        await _reply(claim)
    elif entry["confirmed"]:
        await _reply(claim, into=owner["claimant"])
    elif claim_id not in [_claim_id(w) for w in entry["waiting"]]:
        # The owner's lead has not taken the email yet (it may give it back): a later claim
        # waits, so that nobody is merged into a lead that turns out not to own the email.
        entry["waiting"].append(claim)


async def _on_confirm(entry: dict[str, Any], confirm: wire.Confirm) -> None:
    """The owner's lead took the email: every waiting claim is merged into it (again, if this
    confirm is redone: merges are idempotent)."""
    owner = entry["owner"]
    if owner is None or _claim_id(owner) != _answer_id(confirm):
        return
    entry["confirmed"] = True
    for waiting in sorted(entry["waiting"], key=_order):
        await _reply(waiting, into=owner["claimant"])


async def _on_release(entry: dict[str, Any], release: wire.Release) -> None:
    """A claimant gave the email back (its promote reached a lead merged away meanwhile, or one
    whose earlier identify's claim replaced it): the email goes to the first waiting claim,
    else to nobody. The released claim is remembered, so a redo of it (after a rebalance)
    cannot take the email again."""
    claim_id = _answer_id(release)
    if claim_id not in entry["released"]:
        entry["released"] = sorted([*entry["released"], claim_id])
    owner = entry["owner"]
    if owner is not None and _claim_id(owner) == claim_id:
        entry.update(owner=None, confirmed=False)
        if entry["waiting"]:
            first = min(entry["waiting"], key=_order)
            entry["waiting"] = [w for w in entry["waiting"] if w is not first]
            entry.update(owner=first)
            await _reply(first)
    elif owner is not None and not entry["confirmed"] and _claim_id(owner) != claim_id:
        await _reply(owner)  # (a redo of the release: promote the next one again)
