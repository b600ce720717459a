"""`LeadscoreClient`: queue events from any thread, send them in batches from one background thread.

Why this shape: a server that tracks events must not wait for leadscore on its request path, and
must not lose or double-count an event when leadscore or the network hiccups. So `track` only
checks and queues (the eventId is made there), one daemon thread sends batches, a failed batch is
resent as it was (same eventIds: the server counts each once) with exponential backoff and jitter
or after the server's `Retry-After`, and `flush`/`close` wait for what was queued.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from leadscore_client.events import build_event, encoded_size
from leadscore_client.transports import (
    HttpTransport,
    KafkaTransport,
    RejectedError,
    RetryableError,
    Transport,
)

__all__ = ["LeadscoreClient"]

log = logging.getLogger("leadscore_client")

Event = dict[str, Any]
# the batch route takes at most 1 MiB; leave room for the {"events": [...]} around the events
MAX_REQUEST_BYTES = 1024 * 1024 - 4096
OnError = Callable[[Sequence[Event], Exception], None]


def _log_error(events: Sequence[Event], exc: Exception) -> None:
    log.warning("leadscore: %d events not delivered: %s", len(events), exc)


class LeadscoreClient:
    """Send events to leadscore over HTTP with a secret key (scope `ingest`).

    `flush_interval`: seconds a first event waits for company; `max_batch`: events per request
    (the server takes up to 1,000); `max_retries`: resends of a batch before it is given up and
    handed to `on_error` (default: a logged warning); `retry_base`/`retry_cap`: the backoff's
    first wait and its ceiling, in seconds; `exit_timeout`: seconds the interpreter's exit waits
    for queued events (the thread is a daemon: without this they would be lost).
    """

    def __init__(
        self,
        key: str,
        host: str = "http://127.0.0.1:6066",
        *,
        flush_interval: float = 0.5,
        max_batch: int = 500,
        max_retries: int = 8,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        timeout: float = 10.0,
        exit_timeout: float = 5.0,
        on_error: OnError | None = None,
        transport: Transport | None = None,
    ) -> None:
        if not (1 <= max_batch <= 1000):
            raise ValueError("max_batch must be between 1 and 1000")
        self._transport = transport or HttpTransport(key, host, timeout)
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_retries = max_retries
        self._wait_backoff = wait_exponential_jitter(
            initial=retry_base, max=retry_cap, jitter=retry_base
        )
        self._on_error = on_error or _log_error
        self._queue: deque[tuple[Event, int]] = deque()  # each event with its encoded size
        self._queued_bytes = 0
        self._unsettled = 0  # queued or in flight: flush() waits for 0
        self._lock = threading.Condition()
        self._flush_now = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="leadscore-client", daemon=True)
        self._thread.start()
        self._exit_timeout = exit_timeout
        atexit.register(self._close_at_exit)

    @classmethod
    def kafka(
        cls,
        bootstrap_servers: str,
        project_id: str,
        *,
        topic: str = "leadscore.events",
        producer_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> LeadscoreClient:
        """Produce straight to the events topic (for senders inside the Kafka network): no API
        key, the project named here; same batching, retries and eventIds as over HTTP."""
        transport = KafkaTransport(bootstrap_servers, project_id, topic, **(producer_config or {}))
        return cls("", transport=transport, **options)

    # -- what callers use ------------------------------------------------------------------

    def track(
        self,
        event_type: str,
        *,
        lead_id: str | None = None,
        anonymous_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue an event; returns its eventId. `timestamp` defaults to now."""
        event = build_event(
            event_type,
            lead_id=lead_id,
            anonymous_id=anonymous_id,
            properties=properties,
            timestamp=timestamp,
            event_id=event_id,
        )
        return self._enqueue(event)

    def identify(
        self,
        email: str,
        *,
        lead_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | None = None,
    ) -> str:
        """An `identify` event: the lead claims the e-mail, or is merged into the lead that has it
        (SPEC 5); `traits` such as `name` and `company` go with it."""
        if not isinstance(email, str) or not email.strip():
            raise ValueError("identify needs an e-mail")
        properties = {**(traits or {}), "email": email.strip()}
        return self.track(
            "identify",
            lead_id=lead_id,
            anonymous_id=anonymous_id,
            properties=properties,
            timestamp=timestamp,
            event_id=event_id,
        )

    def page(
        self,
        url: str | None = None,
        *,
        lead_id: str | None = None,
        anonymous_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | None = None,
    ) -> str:
        """A `page_view` (for pages rendered on the server)."""
        props = {**({"url": url} if url else {}), **(properties or {})}
        return self.track(
            "page_view",
            lead_id=lead_id,
            anonymous_id=anonymous_id,
            properties=props,
            timestamp=timestamp,
            event_id=event_id,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until every event queued so far is delivered or given
        up. Returns False if `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_now = True
            self._lock.notify_all()
            while self._unsettled:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread and the transport. Tracking after it fails."""
        with self._lock:
            if self._closed:
                return
        atexit.unregister(self._close_at_exit)
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def _close_at_exit(self) -> None:
        self.close(self._exit_timeout)

    def pending(self) -> int:
        """Events queued or in flight."""
        with self._lock:
            return self._unsettled

    def __enter__(self) -> LeadscoreClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the background thread ---------------------------------------------------------------

    def _enqueue(self, event: Event) -> str:
        size = encoded_size(event) + 1  # and its comma
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            self._queue.append((event, size))
            self._queued_bytes += size
            self._unsettled += 1
            if len(self._queue) == 1 or self._batch_full():
                self._lock.notify_all()  # starts the flush_interval wait, or ends it
        return str(event["eventId"])

    def _batch_full(self) -> bool:
        return len(self._queue) >= self.max_batch or self._queued_bytes >= MAX_REQUEST_BYTES

    def _next_batch(self) -> list[Event] | None:
        """Wait for a first event, then up to flush_interval for a full batch (or a flush)."""
        with self._lock:
            while not self._queue and not self._closed:
                self._flush_now = False
                self._lock.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = time.monotonic() + self.flush_interval
            while (
                not self._batch_full()
                and not self._flush_now
                and not self._closed
                and (left := deadline - time.monotonic()) > 0
            ):
                self._lock.wait(left)
            batch: list[Event] = []
            size = 0
            while self._queue and len(batch) < self.max_batch:
                event, event_size = self._queue[0]
                if batch and size + event_size > MAX_REQUEST_BYTES:
                    break
                self._queue.popleft()
                self._queued_bytes -= event_size
                batch.append(event)
                size += event_size
            return batch

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    self._deliver(batch)
                finally:
                    with self._lock:
                        self._unsettled -= len(batch)
                        self._lock.notify_all()
        finally:
            self._transport.close()

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it gave one, else exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._wait_backoff(state))

    def _deliver(self, batch: list[Event]) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        while batch:
            try:
                retrying(self._transport.send, batch)  # the same events, eventIds, every attempt
                return
            except RetryableError as exc:
                self._on_error(batch, exc)
                return
            except RejectedError as exc:
                if not exc.invalid:  # the whole batch: a bad key, a body too large
                    self._on_error(batch, exc)
                    return
                bad = set(exc.invalid)  # all or nothing on the server: send the valid rest
                self._on_error([e for i, e in enumerate(batch) if i in bad], exc)
                batch = [e for i, e in enumerate(batch) if i not in bad]
            except Exception as exc:  # a transport bug must not kill the thread and hang flush()
                log.exception("leadscore: unexpected error sending %d events", len(batch))
                self._on_error(batch, exc)
                return
