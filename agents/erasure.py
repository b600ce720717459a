"""Erasure of a lead on the worker that owns it (SPEC 11, ADR 0020).

`DELETE /api/leads/{leadId}` writes the erasure record of the requested key and sends an
`erase` command to the partition owning that key (through lead-commands, so it is ordered after
every record of the lead before it). There, `handle_erase`:

- a lead: writes the erasure records of all its keys (itself, its aliases, its anonymous ids),
  deletes its table rows, has the sink delete its MongoDB documents, history rows, automation
  firings and dead letters (`erase` lead changes, keyed by each key so that they follow that
  key's earlier changes), sends `erase` to each alias and anonymous id (their own partitions),
  and gives its e-mail back to the identity agent (`release`, as a lead that cannot take an
  email does: the first waiting claim or nobody gets it, docs/adr/0009);
- an alias: deletes the alias (so a later event of that key starts a new lead) and, when the
  erasure was asked for with this key, erases the lead it was merged into — the same person;
- nothing: the erasure record is enough (any event of the key logged before it is dropped).

Erasure records are applied to this worker's directory at once, not only when the topic is
read back, so no event of an erased key slips through in between.
"""

from __future__ import annotations

import logging
from typing import Any

from msgspec.structs import replace

from agents.outbox import send_command, send_release
from app import wire
from app.erasures import ErasureDirectory, erasure_record, key_hash
from app.partitioning import partition_for
from app.records import OutgoingChange, lead_erasure
from app.settings import settings
from app.topology import app, erasures_topic
from core.lead import LeadSummary
from tables.codec import Alias
from tables.leads import lead_store

__all__ = ["erasures", "handle_erase", "request_erasure"]

log = logging.getLogger(__name__)

erasures = ErasureDirectory(settings)
app.service(erasures)  # type: ignore[arg-type]


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
        wire.Erase(project_id=project_id, erased_at=erased_at, by=by, origin="request"),
    )


def _materialized_erase(changes: list[OutgoingChange], project_id: str, lead_key: str) -> None:
    """The `erase` LeadChange of a key, on that key's partition: after its earlier changes."""
    key = f"{project_id}:{lead_key}".encode()
    erasure = lead_erasure(project_id, lead_key, epoch=settings.app_version)
    changes.append((partition_for(key, settings.partitions), key, erasure))


async def handle_erase(
    key: bytes, body: wire.Erase, partition: int, changes: list[OutgoingChange]
) -> None:
    """Erase the lead (or alias) of `key`; its `erase` LeadChanges join the batch's `changes`."""
    project_id = body.project_id
    lead_key = key.decode().split(":", 1)[1]
    erased_at, by = body.erased_at, body.by
    state = lead_store.get(key)
    if isinstance(state, LeadSummary):
        others = [k for k in dict.fromkeys([*state.aliases, *state.anonymous_ids]) if k != lead_key]
        await _publish(project_id, [lead_key, *others], erased_at, by)
        lead_store.erase(key, partition)
        for k in [lead_key, *state.aliases]:
            _materialized_erase(changes, project_id, k)
        for k in others:
            cascade = replace(body, origin="cascade")
            await send_command(f"{project_id}:{k}".encode(), cascade)
        # give the email back (and a pending claim): the first waiting claim or nobody takes it
        if state.email is not None and state.email_claim is not None:
            await send_release(project_id, state.email, lead_key, state.email_claim[1])
        if state.pending_email is not None and state.pending_claim is not None:
            await send_release(project_id, state.pending_email, lead_key, state.pending_claim[1])
        log.info("erased a lead of %s and %d other keys", project_id, len(others))
        return
    await _publish(project_id, [lead_key], erased_at, by)
    if isinstance(state, Alias):
        lead_store.erase(key, partition)
        if body.origin == "request":
            await send_command(f"{project_id}:{state.canonical}".encode(), body)
    _materialized_erase(changes, project_id, lead_key)
