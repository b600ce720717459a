"""Messages leadscore sends itself (lead-commands, identity-claims), stamped with the epoch.

The epoch is the app version. A replay under a new version re-derives every command from the
events topic, so messages of older epochs still on these topics are ignored (`app.wire` decodes
them as None). The records themselves are typed in `app.wire` (docs/adr/0022).
"""

from __future__ import annotations

from typing import TypeVar

from msgspec import Raw
from msgspec.structs import replace

from app import wire
from app.settings import settings
from app.topology import claims_topic, commands_topic

__all__ = [
    "forward_event",
    "is_current",
    "send_claim",
    "send_command",
    "send_confirm",
    "send_release",
    "stamped",
]

_R = TypeVar("_R", wire.LeadCommand, wire.ClaimRecord)


def is_current(record: wire.LeadCommand | wire.ClaimRecord | None) -> bool:
    """A decoded record of this epoch (`app.wire` decodes other epochs' records as None)."""
    return record is not None and record.epoch == settings.app_version


def stamped(record: _R) -> _R:
    """`record` with this process's epoch."""
    if record.epoch == settings.app_version:
        return record
    return replace(record, epoch=settings.app_version)


async def send_command(key: bytes, command: wire.LeadCommand, partition: int | None = None) -> None:
    await commands_topic.send(key=key, partition=partition, value=wire.encode(stamped(command)))


async def forward_event(key: bytes, wire_event: bytes, logged_at: int) -> None:
    """Hand an event to the partition owning `key` (misrouted record, or an alias's event),
    with the time its record entered the log (identity ranks claims by it)."""
    await send_command(key, wire.EventCommand(event=Raw(wire_event), logged_at=logged_at))


async def send_claim(claim: wire.Claim) -> None:
    """Send a claim (`agents.scoring` builds it: ranked by when its identify was logged)."""
    await _send_claims(claim)


async def send_release(project_id: str, email: str, lead: str, event_id: str) -> None:
    """Give back an email the identity agent gave `lead` for its claim of identify `event_id`
    (the lead cannot take it): on the claims' own partition, so it follows that claim."""
    await _send_claims(
        wire.Release(project_id=project_id, email=email, lead=lead, event_id=event_id)
    )


async def send_confirm(project_id: str, email: str, lead: str, event_id: str) -> None:
    """Tell the identity agent that `lead` took the email its claim of `event_id` was given."""
    await _send_claims(
        wire.Confirm(project_id=project_id, email=email, lead=lead, event_id=event_id)
    )


async def _send_claims(record: wire.ClaimRecord) -> None:
    await claims_topic.send(
        key=f"{record.project_id}:{record.email}".encode(), value=wire.encode(stamped(record))
    )
