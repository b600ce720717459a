"""Messages leadscore sends itself (lead-commands, identity-claims), stamped with the epoch.

The epoch is the app version. A replay under a new version re-derives every command from the
events topic, so messages of older epochs still on these topics are ignored (`is_current`).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.settings import settings
from app.topology import claims_topic, commands_topic

__all__ = [
    "forward_event",
    "is_current",
    "send_claim",
    "send_command",
    "send_confirm",
    "send_release",
]


def is_current(body: Any) -> bool:
    return isinstance(body, dict) and body.get("epoch") == settings.app_version


async def send_command(key: bytes, body: dict[str, Any], partition: int | None = None) -> None:
    await commands_topic.send(
        key=key, partition=partition, value=orjson.dumps({**body, "epoch": settings.app_version})
    )


async def forward_event(key: bytes, wire_event: bytes, logged_at: int) -> None:
    """Hand an event to the partition owning `key` (misrouted record, or an alias's event),
    with the time its record entered the log (identity ranks claims by it)."""
    await send_command(
        key, {"command": "event", "event": orjson.Fragment(wire_event), "loggedAt": logged_at}
    )


async def send_claim(project_id: str, email: str, claim: dict[str, Any]) -> None:
    await claims_topic.send(
        key=f"{project_id}:{email}".encode(),
        value=orjson.dumps({**claim, "epoch": settings.app_version}),
    )


async def send_release(project_id: str, email: str, lead: str, event_id: str) -> None:
    """Give back an email the identity agent gave `lead` for its claim of identify `event_id`
    (the lead cannot take it): on the claims' own partition, so it follows that claim."""
    await _answer("release", project_id, email, lead, event_id)


async def send_confirm(project_id: str, email: str, lead: str, event_id: str) -> None:
    """Tell the identity agent that `lead` took the email its claim of `event_id` was given."""
    await _answer("confirm", project_id, email, lead, event_id)


async def _answer(kind: str, project_id: str, email: str, lead: str, event_id: str) -> None:
    await claims_topic.send(
        key=f"{project_id}:{email}".encode(),
        value=orjson.dumps(
            {
                kind: True,
                "projectId": project_id,
                "email": email,
                "lead": lead,
                "eventId": event_id,
                "epoch": settings.app_version,
            }
        ),
    )
