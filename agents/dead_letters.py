"""The dead-letter indexer: every record of the dead-letter topic → MongoDB `dead_letters`.

Thin: the document is app/dead_letters.py's. A temporary fault (MongoDB down) is retried until
the write succeeds, never skipped (app/faults.py), so no dead letter goes missing from the admin
list; `concurrency=1` keeps the offset from being committed past it.
"""

from __future__ import annotations

import logging
from functools import partial

from faust.types import StreamT

from agents.erasure import erasures
from app.dead_letters import DeadLetterStore, dead_letter_doc
from app.faults import is_temporary, retry_temporary
from app.settings import settings
from app.topology import app, dead_letter_topic, mongo

__all__ = ["dead_letter_index_agent", "dead_letters"]

log = logging.getLogger(__name__)
dead_letters = DeadLetterStore(mongo)


@app.agent(dead_letter_topic, concurrency=1)
async def dead_letter_index_agent(stream: StreamT[bytes]) -> None:
    await erasures.wait_loaded()
    async for event in stream.events():
        message = event.message
        try:
            doc = dead_letter_doc(
                event.value, settings.topic_prefix, message.partition, message.offset
            )
        except Exception:  # never stop the partition; never dead-letter onto this topic
            log.exception(
                "dead-letter record @%s:%s cannot be read", message.partition, message.offset
            )
            continue
        key = doc.get("key")
        written_at = round(message.timestamp * 1000) * 1000
        if isinstance(key, str) and erasures.drops_record(key.encode(), written_at):
            continue  # a record of a key erased since: not listed again (ADR 0020)
        try:
            await retry_temporary("dead-letters", partial(dead_letters.add, doc))
        except Exception as exc:
            if is_temporary(exc):
                raise
            # never dead-lettered: that record would come back to this agent
            log.exception("dead-letter %s cannot be indexed: %r", doc["_id"], exc)
