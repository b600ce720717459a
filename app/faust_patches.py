"""A fix to Faust 0.15.3 that at-least-once processing depends on (see docs/adr/0011).

Before committing offsets, Faust flushes its producer: `ProducerBuffer.flush()` drains the
buffer of table-changelog writes (`send_soon`), then aiokafka's own buffer. But the buffer's
`flush_atmost(None)` returns as soon as no message was sent within 0.1 s, and the message its
background task is handing to aiokafka is counted nowhere. Under backpressure ("producer buffer
full") the flush returns with changelog writes still queued, the offsets of their records are
committed, and a worker killed then loses those writes: the records are never reprocessed. Found
by the kill -9 integration tests (events missing after restart).

`flush()` here waits until the queue is empty *and* no send is in flight; the partial
`flush_atmost(n)` used for backpressure is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust.transport.producer import ProducerBuffer

__all__ = ["apply"]

_INFLIGHT = "_leadscore_inflight"


async def _send_pending(self: Any, fut: Any, _original: Any = ProducerBuffer._send_pending) -> None:
    setattr(self, _INFLIGHT, getattr(self, _INFLIGHT, 0) + 1)
    try:
        await _original(self, fut)
    finally:
        setattr(self, _INFLIGHT, getattr(self, _INFLIGHT) - 1)


async def _flush(self: Any, _original: Any = ProducerBuffer.flush) -> None:
    while self.size or getattr(self, _INFLIGHT, 0):
        if self.should_stop or self.state != "running":
            await _original(self)  # shutting down: Faust's own behaviour
            return
        self.message_sent.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)


def apply() -> None:
    """Idempotent; must run before the app's producer starts its buffer task."""
    if getattr(ProducerBuffer, "_leadscore_patched", False):
        return
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    ProducerBuffer._leadscore_patched = True  # type: ignore[attr-defined]
