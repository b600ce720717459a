"""Erasure of a lead on the worker that owns it (SPEC 11, ADR 0020).

`DELETE /api/leads/{leadId}` writes the erasure record of the requested key and sends an
`erase` command to the partition owning that key (through lead-commands, so it is ordered after
every record of the lead before it). There, `handle_erase`:

- a lead: writes the erasure records of all its keys (itself, its aliases, its anonymous ids),
  deletes its table rows, has the sink delete its MongoDB documents, history rows, automation
  firings and dead letters (`erase` lead changes, keyed by each key so that they follow that
  key's earlier changes), sends `erase` to each alias and anonymous id (their own partitions),
  and releases its e-mail in the email-owners table;
- an alias: deletes the alias (so a later event of that key starts a new lead) and, when the
  erasure was asked for with this key, erases the lead it was merged into — the same person;
- nothing: the erasure record is enough (any event of the key logged before it is dropped).

Erasure records are applied to this worker's directory at once, not only when the topic is
read back, so no event of an erased key slips through in between.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from faust.types import TableT

from agents.outbox import send_command
from app.erasures import ErasureDirectory, erasure_record, key_hash
from app.records import LEAD_CHANGE_SCHEMA, materialized_version
from app.settings import settings
from app.topology import app, claims_topic, lead_changes_topic
from core.lead import LeadSummary
from tables.codec import Alias
from tables.leads import lead_store

__all__ = ["erasures", "handle_erase", "release_email", "released", "request_erasure"]

log = logging.getLogger(__name__)

erasures = ErasureDirectory(settings)
app.service(erasures)  # type: ignore[arg-type]
erasures_topic = app.topic(
    settings.topic("erasures"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


async def _publish(project_id: str, keys: list[str], erased_at: int, by: Any) -> None:
    for lead_key in dict.fromkeys(keys):
        key, value = erasure_record(project_id, lead_key, erased_at, by)
        await (await erasures_topic.send(key=key, value=value))
        erasures.apply(project_id, key_hash(project_id, lead_key), erased_at)


async def request_erasure(project_id: str, lead_key: str, erased_at: int, by: Any) -> None:
    """The API's part: the erasure record of the key asked for, then the command to its owner."""
    await _publish(project_id, [lead_key], erased_at, by)
    await send_command(
        f"{project_id}:{lead_key}".encode(),
        {
            "command": "erase",
            "projectId": project_id,
            "erasedAt": erased_at,
            "by": by,
            "origin": "request",
        },
    )


def _erase_change(project_id: str, lead_key: str) -> bytes:
    return orjson.dumps(
        {
            "schema": LEAD_CHANGE_SCHEMA,
            "kind": "erase",
            "lead": {
                "projectId": project_id,
                "leadId": lead_key,
                "version": materialized_version(settings.app_version, 0),
            },
            "history": [],
        }
    )


async def _materialized_erase(project_id: str, lead_key: str) -> None:
    await lead_changes_topic.send(
        key=f"{project_id}:{lead_key}".encode(), value=_erase_change(project_id, lead_key)
    )


async def handle_erase(key: bytes, body: dict[str, Any], partition: int) -> None:
    project_id = str(body["projectId"])
    lead_key = key.decode().split(":", 1)[1]
    erased_at, by = int(body["erasedAt"]), body.get("by")
    state = lead_store.get(key)
    if isinstance(state, LeadSummary):
        others = [k for k in dict.fromkeys([*state.aliases, *state.anonymous_ids]) if k != lead_key]
        await _publish(project_id, [lead_key, *others], erased_at, by)
        email = state.email or state.pending_email
        lead_store.erase(key, partition)
        for k in [lead_key, *state.aliases]:
            await _materialized_erase(project_id, k)
        for k in others:
            cascade = {**body, "origin": "cascade"}
            await send_command(f"{project_id}:{k}".encode(), cascade)
        if email:
            await release_email(project_id, email, lead_key)
        log.info("erased a lead of %s and %d other keys", project_id, len(others))
        return
    await _publish(project_id, [lead_key], erased_at, by)
    if isinstance(state, Alias):
        lead_store.erase(key, partition)
        if body.get("origin") == "request":
            await send_command(f"{project_id}:{state.canonical}".encode(), body)
    await _materialized_erase(project_id, lead_key)


async def release_email(project_id: str, email: str, lead_key: str) -> None:
    """Ask the email's partition to forget that this (erased) lead owns it."""
    await claims_topic.send(
        key=f"{project_id}:{email}".encode(),
        value=orjson.dumps(
            {
                "release": True,
                "projectId": project_id,
                "lead": lead_key,
                "epoch": settings.app_version,
            }
        ),
    )


def released(claim: dict[str, Any], key: bytes | None, owners: TableT) -> bool:
    """In the identity agent: apply a release (True), or say it is a claim (False)."""
    if not claim.get("release"):
        return False
    held = owners.get(key)
    if held is not None and orjson.loads(held).get("lead") == claim.get("lead"):
        del owners[key]
    return True
