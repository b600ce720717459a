"""Delivery of decided firings (SPEC 9), in its own service: never in the scoring path.

The schedule lives in MongoDB (`automation_firings`), not in memory, so retries spanning an hour
outlive restarts and kill -9. A firing this process has just decided arrives here already leased
to it (`submit`), so the first attempt costs no claim; due retries, and firings whose holder
died, are claimed in batches with a per-document atomic lease. Every attempt is recorded with
the next attempt time, in batched bulk writes. A process that dies holding a lease delays those
deliveries by the lease only; the receiver may then see the same `X-Leadscore-Delivery` twice
(at least once) and deduplicates on it.

Isolation: at most `delivery_concurrency` attempts in flight per process and at most
`delivery_per_destination` per destination host; a destination at its limit or with an open
circuit breaker gets its deliveries postponed (handed back with a later time), so a hanging
receiver holds only its own slots and never those of a healthy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from mode import Service
from pymongo import UpdateOne

from app.automations import AutomationModel, destination_of
from app.firings import FiringLog
from app.projects import ProjectDirectory
from app.senders import Outcome, Senders, webhook_payload
from app.settings import Settings
from core.automation import Breaker, backoff_delay

__all__ = ["Deliveries"]

log = logging.getLogger(__name__)
_BUSY_RETRY = 1.0  # seconds before a postponed delivery to a busy destination is looked at again
_CLAIM_BATCH = 200
_FLUSH_EVERY = 0.05  # seconds: attempts are recorded in bulk writes at least this often
_WAITING_ROUNDS = 5  # deliveries a busy destination may have waiting in memory, per slot


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
        self._claims = itertools.count()
        self._wake = asyncio.Event()
        self._ready: deque[dict[str, Any]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._per_destination: dict[str, int] = defaultdict(int)
        # deliveries waiting in memory for a busy destination; beyond a few rounds' worth they
        # are handed back to MongoDB instead, so a lease never runs out while one waits here
        self._waiting: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._breakers: dict[str, Breaker] = {}
        self._writes: list[UpdateOne] = []
        self._next_claim = 0.0  # monotonic time of the next look for due deliveries
        self.stats: dict[str, int] = defaultdict(int)  # counters, logged while they change
        # the lease outlives the longest wait in memory (every waiting round an attempt that
        # times out) plus the attempt itself, with room to record it
        self.lease = settings.delivery_timeout * (_WAITING_ROUNDS + 2) + 5

    # -- what the firing agent uses ----------------------------------------------------------
    def lease_for_new(self, n: int) -> str | None:
        """A lease token for `n` firings about to be decided, if this process can start them
        soon; None leaves them to be claimed (by any process) instead."""
        if len(self._ready) + n > self._settings.delivery_concurrency * 4:
            return None
        return f"{self._owner}:{next(self._claims)}"

    def submit(self, docs: list[dict[str, Any]]) -> None:
        """Firings decided by this process, leased to it by `lease_for_new`."""
        pending = [d for d in docs if d.get("status") == "pending"]
        self.stats["submitted"] += len(pending)
        self._ready.extend(pending)
        self._wake.set()

    def breaker(self, destination: str) -> Breaker:
        found = self._breakers.get(destination)
        if found is None:
            found = Breaker(self._settings.breaker_failures, self._settings.breaker_cooldown)
            self._breakers[destination] = found
        return found

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        self.add_future(self._dispatch_loop())
        self.add_future(self._write_loop())
        self.add_future(self._log_stats())

    async def _log_stats(self) -> None:
        last: dict[str, int] = {}
        while not self.should_stop:
            await asyncio.sleep(10.0)
            if self.stats != last:
                last = dict(self.stats)
                log.info(
                    "deliveries: %s; ready %d, in flight %d, waiting %d",
                    dict(sorted(last.items())),
                    len(self._ready),
                    len(self._in_flight),
                    sum(len(w) for w in self._waiting.values()),
                )

    async def on_stop(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await self._flush()
        await self._senders.close()

    async def _dispatch_loop(self) -> None:
        await self._directory.wait_loaded()
        while not self.should_stop:
            try:
                started = await self._start_some()
            except Exception:  # MongoDB away: the schedule is safe there; look again soon
                log.warning("claiming deliveries failed; retrying", exc_info=True)
                started = 0
            if started:
                continue
            self._wake.clear()
            wait = max(0.01, self._next_claim - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _start_some(self) -> int:
        room = self._settings.delivery_concurrency - len(self._in_flight)
        if room <= 0:
            return 0
        now = time.monotonic()
        if not self._ready and now >= self._next_claim:
            # MongoDB is asked for due retries once per poll (or again at once after a full
            # batch), never per firing: firings this process decides arrive by `submit`
            token = f"{self._owner}:{next(self._claims)}"
            limit = min(room, _CLAIM_BATCH)
            claimed = await self._firings.claim_due(token, datetime.now(UTC), self.lease, limit)
            self._ready.extend(claimed)
            self.stats["claimed"] += len(claimed)
            self._next_claim = now + (0 if len(claimed) == limit else self._settings.delivery_poll)
        started = 0
        while self._ready and len(self._in_flight) < self._settings.delivery_concurrency:
            self._spawn(self._ready.popleft())
            started += 1
        return started

    def _spawn(self, doc: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._deliver(doc))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self._wake.set()  # a slot is free

    # -- one delivery ------------------------------------------------------------------------
    async def _deliver(self, doc: dict[str, Any]) -> None:
        rule = self._rule(doc)
        now = datetime.now(UTC)
        if rule is None:
            self._record(doc, Outcome(False, False, None, "the automation rule no longer exists"))
            return
        destination = destination_of(rule.action)
        breaker = self.breaker(destination)
        mono = time.monotonic()
        limit = self._settings.delivery_per_destination
        if self._per_destination[destination] >= limit:
            if len(self._waiting[destination]) < _WAITING_ROUNDS * limit:
                self._waiting[destination].append(doc)  # its turn comes when a slot frees
                self.stats["waited"] += 1
            else:
                self.stats["postponed"] += 1
                at = now + timedelta(seconds=_BUSY_RETRY)
                self._writes.append(self._firings.postponed(doc, at))
            return
        if not breaker.allow(mono):
            self.stats["paused"] += 1
            wait = breaker.retry_at(mono) - mono
            self._writes.append(self._firings.postponed(doc, now + timedelta(seconds=wait)))
            return
        self._per_destination[destination] += 1
        try:
            outcome = await self._senders.send(rule.action, webhook_payload(doc))
        finally:
            self._per_destination[destination] -= 1
            if self._waiting[destination]:  # this destination's next, in this slot
                self._spawn(self._waiting[destination].popleft())
        if outcome.delivered or not outcome.retry:
            breaker.success()  # the destination answered: it is up
        else:
            breaker.failure(time.monotonic())
        self._record(doc, outcome)

    def _rule(self, doc: dict[str, Any]) -> AutomationModel | None:
        project = self._directory.get(doc["projectId"])
        if project is None:
            return None
        return next((a for a in project.automations if a.id == doc["ruleId"]), None)

    def _record(self, doc: dict[str, Any], outcome: Outcome) -> None:
        at = datetime.now(UTC)
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
        self.stats[status] += 1
        attempt = {"attempt": attempt_no, **outcome.as_attempt(at)}
        self._writes.append(self._firings.attempted(doc, attempt, status, next_at))

    # -- recording, in bulk --------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(_FLUSH_EVERY)
            try:
                await self._flush()
            except Exception:  # kept and retried: an attempt's record is never dropped
                log.warning("recording delivery attempts failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def _flush(self) -> None:
        if not self._writes:
            return
        batch, self._writes = self._writes, []
        try:
            await self._firings.write(batch)
        except Exception:
            self._writes[:0] = batch
            raise
