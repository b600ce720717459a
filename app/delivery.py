"""Delivery of decided firings (SPEC 9), in its own service: never in the scoring path.

The schedule lives in MongoDB (`automation_firings`), not in memory, so retries spanning an hour
outlive restarts and kill -9: every process claims due deliveries with an atomic lease
(find-and-modify), makes one attempt, and records it with the next attempt time. A process that
dies holding a lease delays that delivery by the lease only; the receiver may then see the same
`X-Leadscore-Delivery` twice (at least once) and deduplicates on it.

Isolation: at most `delivery_concurrency` attempts in flight per process and at most
`delivery_per_destination` per destination host; a destination at its limit or with an open
circuit breaker gets its deliveries postponed (handed back with a later time), so a hanging
receiver holds only its own slots and never those of a healthy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from mode import Service

from app.automations import AutomationModel, destination_of
from app.firings import FiringLog
from app.projects import ProjectDirectory
from app.senders import Outcome, Senders, webhook_payload
from app.settings import Settings
from core.automation import Breaker, backoff_delay

__all__ = ["Deliveries"]

log = logging.getLogger(__name__)
_BUSY_RETRY = 1.0  # seconds before a postponed delivery to a busy destination is looked at again


class Deliveries(Service):
    def __init__(
        self, settings: Settings, firings: FiringLog, directory: ProjectDirectory, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._settings = settings
        self._firings = firings
        self._directory = directory
        self._senders = Senders(settings)
        self._owner = "dl_" + secrets.token_hex(6)
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._per_destination: dict[str, int] = defaultdict(int)
        self._breakers: dict[str, Breaker] = {}
        # the lease outlives one attempt with room to record it
        self._lease = settings.delivery_timeout * 3 + 5

    def wake(self) -> None:
        """New firings were decided by this process: look at once, not at the next poll."""
        self._wake.set()

    async def on_start(self) -> None:
        self.add_future(self._claim_loop())

    async def on_stop(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await self._senders.close()

    def breaker(self, destination: str) -> Breaker:
        found = self._breakers.get(destination)
        if found is None:
            found = Breaker(self._settings.breaker_failures, self._settings.breaker_cooldown)
            self._breakers[destination] = found
        return found

    async def _claim_loop(self) -> None:
        await self._directory.wait_loaded()
        while not self.should_stop:
            try:
                claimed = await self._claim_some()
            except Exception:  # MongoDB away: the schedule is safe there; look again soon
                log.warning("claiming deliveries failed; retrying", exc_info=True)
                claimed = 0
            if claimed:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.delivery_poll)

    async def _claim_some(self) -> int:
        claimed = 0
        while len(self._in_flight) < self._settings.delivery_concurrency:
            doc = await self._firings.claim_due(self._owner, datetime.now(UTC), self._lease)
            if doc is None:
                break
            claimed += 1
            task = asyncio.ensure_future(self._deliver(doc))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return claimed

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self._wake.set()  # a slot is free

    async def _deliver(self, doc: dict[str, Any]) -> None:
        firing_id = doc["_id"]
        rule = self._rule(doc)
        now = datetime.now(UTC)
        if rule is None:
            outcome = Outcome(False, False, None, "the automation rule no longer exists")
            await self._record(doc, outcome, now)
            return
        destination = destination_of(rule.action)
        breaker = self.breaker(destination)
        mono = time.monotonic()
        if self._per_destination[destination] >= self._settings.delivery_per_destination:
            await self._firings.postpone(
                firing_id, self._owner, now + timedelta(seconds=_BUSY_RETRY)
            )
            return
        if not breaker.allow(mono):
            wait = breaker.retry_at(mono) - mono
            await self._firings.postpone(firing_id, self._owner, now + timedelta(seconds=wait))
            return
        self._per_destination[destination] += 1
        try:
            outcome = await self._senders.send(rule.action, webhook_payload(doc))
        finally:
            self._per_destination[destination] -= 1
        if outcome.delivered or not outcome.retry:
            breaker.success()  # the destination answered: it is up
        else:
            breaker.failure(time.monotonic())
        await self._record(doc, outcome, datetime.now(UTC))

    def _rule(self, doc: dict[str, Any]) -> AutomationModel | None:
        project = self._directory.get(doc["projectId"])
        if project is None:
            return None
        return next((a for a in project.automations if a.id == doc["ruleId"]), None)

    async def _record(self, doc: dict[str, Any], outcome: Outcome, at: datetime) -> None:
        attempt_no = int(doc.get("attemptCount", 0)) + 1
        s = self._settings
        next_at = None
        if outcome.delivered:
            status = "delivered"
        elif outcome.retry and attempt_no < s.delivery_attempts:
            status = "pending"
            delay = backoff_delay(
                attempt_no, s.delivery_backoff, s.delivery_backoff_max, outcome.retry_after
            )
            next_at = at + timedelta(seconds=delay)
        else:
            status = "failed"
        attempt = {"attempt": attempt_no, **outcome.as_attempt(at)}
        await self._firings.record_attempt(doc["_id"], self._owner, attempt, status, next_at)
