"""Where a batch goes: leadscore's HTTP batch route, or straight to the events topic.

A transport sends one batch and says how it went by raising: `RetryableError` (nothing known to
be lost: the network, 429, 5xx, a broker error; send the same events again) or `RejectedError`
(the server refused some or all events for good; resending them would not help). Both are called
only from the client's one background thread.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from leadscore_client.events import lead_key

__all__ = [
    "HttpTransport",
    "KafkaTransport",
    "RejectedError",
    "RetryableError",
    "Transport",
]


class RetryableError(Exception):
    """The batch may not have arrived: send it again (after `retry_after` seconds if given)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(Exception):
    """The server refused events: `invalid` lists their indexes in the batch (None: all)."""

    def __init__(self, message: str, invalid: Sequence[int] | None = None) -> None:
        super().__init__(message)
        self.invalid = None if invalid is None else list(invalid)


class Transport(Protocol):
    def send(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpTransport:
    """POST /api/events/batch with the key in X-API-Key (stdlib only: no dependency to install)."""

    def __init__(self, key: str, host: str, timeout: float = 10.0) -> None:
        self.url = f"{host.rstrip('/')}/api/events/batch"
        self.key = key
        self.timeout = timeout

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(
                {"events": list(events)}, separators=(",", ":"), ensure_ascii=False
            ).encode(),  # as the client measured it, to stay under the route's 1 MiB
            headers={"Content-Type": "application/json", "X-API-Key": self.key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(
                    f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))
                ) from None
            invalid = None
            if exc.code == 422:
                try:
                    invalid = [item["index"] for item in json.loads(body)["invalid"]]
                except (ValueError, KeyError, TypeError):
                    invalid = None
            raise RejectedError(f"HTTP {exc.code}: {body[:500]!r}", invalid) from None
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout, DNS
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        pass


class KafkaTransport:
    """Produce to the events topic in SPEC 2's wire format: key `"{projectId}:{leadKey}"`, value the
    JSON event with `projectId`. aiokafka's default partitioner is Kafka's murmur2 of the key bytes,
    the one leadscore's own producers use, so every record lands where its lead is owned. The
    producer lives on an event loop of the client's background thread."""

    def __init__(
        self,
        bootstrap_servers: str,
        project_id: str,
        topic: str = "leadscore.events",
        **producer_config: Any,
    ) -> None:
        try:
            from aiokafka import AIOKafkaProducer
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "the Kafka mode needs aiokafka: pip install 'leadscore-client[kafka]'"
            ) from None
        self.project_id = project_id
        self.topic = topic
        self._loop = asyncio.new_event_loop()
        config = {"acks": "all", "enable_idempotence": True, **producer_config}
        self._producer_factory = lambda: AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, **config
        )
        self._producer: Any = None

    def record(self, event: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """(key, value) of one event on the topic."""
        value = {**event, "projectId": self.project_id}
        key = f"{self.project_id}:{lead_key(event)}"
        return key.encode(), json.dumps(value, separators=(",", ":")).encode()

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        from aiokafka.errors import KafkaError

        try:
            self._loop.run_until_complete(self._send(events))
        except (TimeoutError, KafkaError, OSError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from None

    async def _send(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self._producer is None:
            producer = self._producer_factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # no half-started producer left behind; the retry makes anew
                raise
            self._producer = producer
        futures = [
            await self._producer.send(self.topic, key=key, value=value)
            for key, value in map(self.record, events)
        ]
        await asyncio.gather(*futures)  # acks=all: durable once every record is acknowledged

    def close(self) -> None:
        if self._producer is not None:
            self._loop.run_until_complete(self._producer.stop())
            self._producer = None
        self._loop.close()
