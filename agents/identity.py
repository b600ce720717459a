"""The identity agent: one owner per email, decided on the email's own partition (SPEC 5).

Claims arrive keyed by "{projectId}:{email}", so every claim for one email is handled in order
by one agent: the first claimant owns it (promote), every later one is merged into the owner.
Replies go to the claimant's partition through lead-commands; all are idempotent, so a claim
processed twice after a crash gives the same answer.
"""

from __future__ import annotations

import orjson
from faust.types import StreamT

from app.faust_app import app
from app.settings import settings
from app.topology import claims_topic, commands_topic

__all__ = ["email_owners", "identity_agent"]

email_owners = app.Table(
    "email-owners",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    help='"{projectId}:{email}" -> lead key of its owner',
)


@app.agent(claims_topic)
async def identity_agent(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        claim = orjson.loads(event.value)
        claimant: str = claim["claimant"]
        owner_raw = email_owners.get(event.message.key)
        if owner_raw is None:
            email_owners[event.message.key] = claimant.encode()
            owner = claimant
        else:
            owner = owner_raw.decode()
        reply = {
            "command": "promote" if owner == claimant else "merge",
            "projectId": claim["projectId"],
            "email": claim["email"],
            "name": claim.get("name"),
            "company": claim.get("company"),
            "into": owner,
        }
        await commands_topic.send(
            key=f"{claim['projectId']}:{claimant}".encode(), value=orjson.dumps(reply)
        )
