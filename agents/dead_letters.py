"""The dead-letter indexer: every record of the dead-letter topic → MongoDB `dead_letters`.

Thin: the document is app/dead_letters.py's. A MongoDB failure is temporary (SPEC 12): the
write is retried with backoff until it succeeds, never skipped, so no dead letter goes missing
from the admin list; `concurrency=1` keeps the offset from being committed past it.
"""

from __future__ import annotations

import logging

from faust.types import StreamT
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential

from agents.erasure import erasures
from app import metrics
from app.dead_letters import DeadLetterStore, dead_letter_doc
from app.settings import settings
from app.topology import app, dead_letter_topic, mongo

__all__ = ["dead_letter_index_agent", "dead_letters"]

log = logging.getLogger(__name__)
dead_letters = DeadLetterStore(mongo)
_log_retry = before_sleep_log(log, logging.WARNING)


def _count_and_log(retry_state: object) -> None:
    metrics.mongo_error("dead-letters")
    _log_retry(retry_state)  # type: ignore[arg-type]


@app.agent(dead_letter_topic, concurrency=1)
async def dead_letter_index_agent(stream: StreamT[bytes]) -> None:
    await erasures.wait_loaded()
    async for event in stream.events():
        message = event.message
        doc = dead_letter_doc(event.value, settings.topic_prefix, message.partition, message.offset)
        key = doc.get("key")
        written_at = round(message.timestamp * 1000) * 1000
        if isinstance(key, str) and erasures.drops_record(key.encode(), written_at):
            continue  # a record of a key erased since: not listed again (ADR 0020)
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception_type(Exception),
            before_sleep=_count_and_log,
            reraise=True,
        ):
            with attempt:
                await dead_letters.add(doc)
