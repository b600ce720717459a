"""Fault isolation for every consumer: which errors are temporary, which permanent (ADR 0015).

A *permanent* error is one the same record will raise however often it is retried (bad JSON, an
invalid event, an unknown project, a value the code or MongoDB cannot take): that record goes to
the dead-letter topic with its reason and the consumer moves on. A *temporary* error comes from
the world, not the record (the broker, the disk, MongoDB's network or elections): the record is
retried with backoff until it goes through — never dead-lettered, never committed past, because
Faust acks (and later commits) a record as soon as the agent's step returns.

Every consumer runs its per-record step through `isolate`, so the agents themselves stay thin.
`retrying` is what `/api/health` reads to say a consumer is stuck on a temporary fault.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import errors as kafka_errors
from faust.exceptions import ProducerSendError
from pymongo import errors as mongo_errors
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from app import metrics
from core.events import FieldError

__all__ = [
    "STUCK_AFTER_SECONDS",
    "dead_letter",
    "dead_letter_value",
    "inject",
    "is_temporary",
    "isolate",
    "retry_temporary",
    "retrying",
]

log = logging.getLogger(__name__)

STUCK_AFTER_SECONDS = 10.0
"""A consumer retrying one temporary fault for longer than this makes `/api/health` degraded."""

# MongoDB server error codes that describe the server's state, not the write: elections,
# shutdowns, time limits, write conflicts (the drivers' own retryable-writes list, plus limits).
_MONGO_RETRYABLE_CODES = frozenset(
    {6, 7, 50, 64, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 134, 133}
)
_MONGO_TEMPORARY = (
    mongo_errors.ConnectionFailure,  # AutoReconnect, NetworkTimeout, NotPrimaryError, ...
    mongo_errors.ExecutionTimeout,
    mongo_errors.WTimeoutError,
    mongo_errors.WaitQueueTimeoutError,
    mongo_errors.WriteConcernError,
)
_KAFKA_TEMPORARY = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    ProducerSendError,
)


def _mongo_write_error_is_temporary(error: dict[str, Any]) -> bool:
    return error.get("code") in _MONGO_RETRYABLE_CODES


def is_temporary(exc: BaseException) -> bool:
    """True when retrying the same record later can succeed (see ADR 0015)."""
    if isinstance(exc, mongo_errors.BulkWriteError):
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            return True
        write_errors = details.get("writeErrors") or []
        return bool(write_errors) and all(map(_mongo_write_error_is_temporary, write_errors))
    if isinstance(exc, _MONGO_TEMPORARY):
        return True
    if isinstance(exc, mongo_errors.OperationFailure):
        return exc.code in _MONGO_RETRYABLE_CODES or exc.has_error_label("RetryableWriteError")
    if isinstance(exc, mongo_errors.PyMongoError):
        return False  # InvalidDocument, DocumentTooLarge, a refused write: the data's fault
    if isinstance(exc, _KAFKA_TEMPORARY):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False))
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | OSError):
        return True  # disk full, I/O error, a connection reset
    # RocksDB (rocksdict) reports a failed write as a plain exception "IO error: ..."
    return str(exc).startswith("IO error")


def _note_retry(consumer: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        since = retrying.setdefault(consumer, (time.monotonic(), ""))[0]
        retrying[consumer] = (since, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, mongo_errors.PyMongoError):
            metrics.mongo_error(consumer)
        log.warning(
            "%s: temporary fault, retry %d in %.1fs: %r",
            consumer,
            state.attempt_number,
            state.upcoming_sleep,
            exc,
        )

    return before_sleep


retrying: dict[str, tuple[float, str]] = {}
"""consumer → (monotonic time its current fault began, the last error) while it retries."""


def stuck(now: float | None = None) -> dict[str, str]:
    """The consumers retrying a temporary fault for longer than `STUCK_AFTER_SECONDS`."""
    now = time.monotonic() if now is None else now
    return {c: e for c, (since, e) in retrying.items() if now - since > STUCK_AFTER_SECONDS}


async def retry_temporary(consumer: str, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run `work` until it returns, retrying temporary faults with capped exponential backoff
    for as long as they last; a permanent error is raised at once."""
    try:
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception(is_temporary),
            before_sleep=_note_retry(consumer),
            reraise=True,
        ):
            with attempt:
                return await work()
    finally:
        retrying.pop(consumer, None)
    return None  # pragma: no cover — AsyncRetrying either returns or raises


async def isolate(consumer: str, message: Any, work: Callable[[], Awaitable[None]]) -> None:
    """One record's step: temporary faults retried, a permanent error dead-letters the record.

    `work` must be safe to run again after a partial run (every consumer's step is: table
    writes are redone from the record, MongoDB writes are idempotent).
    """

    async def step() -> None:
        try:
            await work()
        except Exception as exc:
            if is_temporary(exc):
                raise
            log.exception(
                "%s: record %s:%s@%s cannot be processed; dead-lettered",
                consumer,
                getattr(message, "topic", "?"),
                getattr(message, "partition", "?"),
                getattr(message, "offset", "?"),
            )
            await dead_letter(message, f"{consumer} failed: {type(exc).__name__}: {exc}")

    await retry_temporary(consumer, step)


async def dead_letter(message: Any, reason: str, errors: Sequence[FieldError] = ()) -> None:
    """Park a record that cannot be processed, with why, so nothing is lost and the consumer
    goes on (SPEC 2, 12). The value keeps the record's bytes (as text) for a redrive."""
    value = message.value
    await dead_letter_value(
        key=message.key,
        reason=reason,
        errors=errors,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        value=value.decode(errors="replace") if isinstance(value, bytes) else None,
    )


async def dead_letter_value(
    *,
    key: bytes | None,
    reason: str,
    topic: str,
    value: str | None,
    errors: Sequence[FieldError] = (),
    partition: int | None = None,
    offset: int | None = None,
) -> None:
    from app.topology import dead_letter_topic  # the fault rules above need no Faust app

    metrics.dead_letter(reason)
    log.warning(  # the record's position (JSON logs: fields), never its content
        "dead-lettered %s:%s@%s: %s",
        topic,
        partition,
        offset,
        metrics.dead_letter_class(reason),
        extra={"topic": topic, "partition": partition, "offset": offset},
    )
    await dead_letter_topic.send(
        key=key,
        value=orjson.dumps(
            {
                "reason": reason,
                "errors": [e.as_json() for e in errors],
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "key": key.decode(errors="replace") if key else None,
                "value": value,
                "deadLetteredAt": time.time(),
            }
        ),
    )


# -- test-only fault injection ---------------------------------------------------------------
# LEADSCORE_TEST_FAULTS="point=count[,point=count]": the first `count` calls of `inject(point)`
# raise the fault real hardware would (tests/integration/test_faults.py). Unset in production.
_FAULTS = {
    "table-write": lambda: OSError(errno.ENOSPC, "No space left on device (injected)"),
    "produce": lambda: kafka_errors.KafkaTimeoutError("produce timed out (injected)"),
}
_remaining: dict[str, int] = {}
for _spec in filter(None, os.environ.get("LEADSCORE_TEST_FAULTS", "").split(",")):
    _point, _, _count = _spec.partition("=")
    if _point not in _FAULTS:
        raise ValueError(f"LEADSCORE_TEST_FAULTS: unknown fault point {_point!r}")
    _remaining[_point] = int(_count or "1")


def inject(point: str) -> None:
    """Raise the injected fault at `point` while its test budget lasts; a no-op otherwise."""
    left = _remaining.get(point)
    if left:
        _remaining[point] = left - 1
        log.warning("injecting a %s fault (%d left)", point, left - 1)
        raise _FAULTS[point]()
