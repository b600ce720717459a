"""Delivery of decided firings (SPEC 9), in its own service: never in the scoring path.

The schedule lives in MongoDB (`automation_firings`), not in memory, so retries spanning an hour
outlive restarts and kill -9. A firing this process has just decided arrives here already leased
to it (`submit`), so the first attempt costs no claim; due retries, and firings whose holder
died, are claimed in batches with a per-document atomic lease. Every attempt is recorded with
the next attempt time, in batched bulk writes. A process that dies holding a lease delays those
deliveries by the lease only; the receiver may then see the same `X-Leadscore-Delivery` twice
(at least once) and deduplicates on it.

Isolation: leased firings wait in memory in one queue per destination (scheme, host, port); one
dispatch loop starts attempts while fewer than `delivery_concurrency` are in flight in total and
fewer than `delivery_per_destination` to that destination, so a hanging receiver holds only its
own slots and never those of a healthy one. An attempt starts only while the lease still covers
it (`delivery_timeout` plus a margin); a firing that waited too long, or whose destination's
breaker is open, is handed back to MongoDB with a later time instead. No timer per firing: one
loop, woken when a firing arrives or a slot frees.
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

from app import metrics
from app.automations import AutomationModel, destination_of
from app.firings import FiringLog
from app.projects import ProjectDirectory
from app.senders import Outcome, Senders, webhook_payload
from app.settings import Settings
from core.automation import Breaker, backoff_delay

__all__ = ["Deliveries"]

log = logging.getLogger(__name__)
_CLAIM_BATCH = 200
_FLUSH_EVERY = 0.05  # seconds: attempts are recorded in bulk writes at least this often
_BUSY_RETRY = 1.0  # seconds before a claimed firing a busy destination cannot take is due again
_HELD_PER_SLOT = 8  # leased firings a process keeps in memory, per slot of total concurrency
_QUEUED_PER_SLOT = 32  # of those, at most this many per slot of one destination
_ROOM_WAIT = 2.0  # seconds the firing agent waits at most for room (then leaves them to claims)
_MARGIN = 5.0  # seconds of lease left over after an attempt's timeout, to record it
_NO_RULE = Outcome(False, False, None, "the automation rule no longer exists")


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
        # leased firings waiting for a slot, per destination, oldest first
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._room = asyncio.Event()  # set when held firings leave the queues
        self._held = 0  # firings in those queues
        self._in_flight: set[asyncio.Task[None]] = set()
        self._per_destination: dict[str, int] = defaultdict(int)
        self._breakers: dict[str, Breaker] = {}
        self._writes: list[UpdateOne] = []
        self.stats: dict[str, int] = defaultdict(int)  # counters, logged while they change
        # long enough for a firing to wait its turn behind a few rounds of attempts that time
        # out; one that waits longer is handed back rather than sent on an expiring lease
        self.lease = settings.delivery_timeout * 6 + _MARGIN
        self._max_held = settings.delivery_concurrency * _HELD_PER_SLOT
        self._max_queued = settings.delivery_per_destination * _QUEUED_PER_SLOT

    # -- what the firing agent uses ----------------------------------------------------------
    async def wait_room(self, keys: list[tuple[str, str]]) -> None:
        """Wait (a moment at most) until this process can hold firings of these (project,
        rule) pairs: in total, and in the queue of each one's destination. So a burst to a
        healthy destination slows the firing agent to the pace of delivery instead of going
        to the (slower) claim path, while a destination that stays full — slow, or hanging
        until its breaker opens — costs the others at most this wait. Scoring never waits here:
        candidates have their own topic."""
        destinations = {self.destination(p, r) for p, r in keys}
        deadline = time.monotonic() + _ROOM_WAIT
        while self._held + len(keys) > self._max_held or any(
            self._blocked(d) for d in destinations if d is not None
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)

    def lease_for_new(self, n: int) -> str | None:
        """A lease token for `n` firings about to be decided, if this process has room to hold
        them; None leaves them to be claimed (by any process) instead."""
        if self._held + n > self._max_held:
            return None
        return f"{self._owner}:{next(self._claims)}"

    def takes(self, project_id: str, rule_id: str) -> bool:
        """Whether a new firing of this rule may be leased to this process: not while its
        destination's queue is full (it is then left to be claimed later, by any process)."""
        destination = self.destination(project_id, rule_id)
        return destination is None or not self._full(destination)

    def destination(self, project_id: str, rule_id: str) -> str | None:
        project = self._directory.get(project_id)
        rule = next((a for a in project.automations if a.id == rule_id), None) if project else None
        return destination_of(rule.action) if rule is not None else None

    def _full(self, destination: str) -> bool:
        queue = self._queues.get(destination)
        return queue is not None and len(queue) >= self._max_queued

    def _blocked(self, destination: str) -> bool:
        """Full, but draining: its breaker is closed (an open one hands its firings back)."""
        return self._full(destination) and self.breaker(destination).state == "closed"

    def submit(self, docs: list[dict[str, Any]]) -> None:
        """Firings decided by this process, leased to it by `lease_for_new`."""
        pending = [d for d in docs if d.get("status") == "pending"]
        self.stats["submitted"] += len(pending)
        self._hold(pending, capped=False)  # `takes` and `wait_room` vetted them

    def breaker(self, destination: str) -> Breaker:
        found = self._breakers.get(destination)
        if found is None:
            found = Breaker(self._settings.breaker_failures, self._settings.breaker_cooldown)
            self._breakers[destination] = found
        return found

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        self.add_future(self._dispatch_loop())
        self.add_future(self._claim_loop())
        self.add_future(self._write_loop())
        self.add_future(self._log_stats())

    async def _log_stats(self) -> None:
        last: dict[str, int] = {}
        while not self.should_stop:
            await asyncio.sleep(10.0)
            if self.stats != last:
                last = dict(self.stats)
                log.info(
                    "deliveries: %s; held %d, in flight %d",
                    dict(sorted(last.items())),
                    self._held,
                    len(self._in_flight),
                )

    async def on_stop(self) -> None:
        # firings held but not started go back at once, so another process (or this one, on
        # restart) takes them now and not when their lease runs out; an attempt in flight
        # keeps its lease: it may have reached the receiver
        now = datetime.now(UTC)
        for queue in self._queues.values():
            self._writes.extend(self._firings.postponed(doc, now) for doc in queue)
            self.stats["handedBack"] += len(queue)
        self._queues.clear()
        self._held = 0
        for task in list(self._in_flight):
            task.cancel()
        await self._flush()
        await self._senders.close()

    async def _dispatch_loop(self) -> None:
        """Starts attempts whenever firings arrive or a slot frees; never waits for MongoDB."""
        await self._directory.wait_loaded()
        while not self.should_stop:
            self._wake.clear()
            try:
                self._start_some()
            except Exception:  # one bad document must not stop every delivery of the process
                log.exception("starting deliveries failed; going on")
            await self._wake.wait()

    async def _claim_loop(self) -> None:
        """Due retries and orphans, in batches, while this process has room to hold them:
        MongoDB is asked once per poll (or again at once after a full batch), never per
        firing; firings this process decides arrive by `submit` instead. A loop of its own, so
        a slow claim never holds up the attempts of firings already held."""
        await self._directory.wait_loaded()
        poll = self._settings.delivery_poll
        while not self.should_stop:
            room = self._max_held // 2 - self._held
            if room <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), poll)
                continue
            limit = min(room, _CLAIM_BATCH)
            token = f"{self._owner}:{next(self._claims)}"
            try:
                claimed = await self._firings.claim_due(token, datetime.now(UTC), self.lease, limit)
            except Exception:  # MongoDB away: the schedule is safe there; look again soon
                log.warning("claiming deliveries failed; retrying", exc_info=True)
                await asyncio.sleep(poll)
                continue
            self.stats["claimed"] += len(claimed)
            self._hold(claimed, capped=True)
            if len(claimed) < limit:
                await asyncio.sleep(poll)

    def _hold(self, docs: list[dict[str, Any]], capped: bool) -> None:
        """Queue leased firings by destination; with `capped`, what a full destination's queue
        cannot take goes back to MongoDB for later."""
        for doc in docs:
            rule = self._rule(doc)
            if rule is None:
                self._record(doc, _NO_RULE)
                continue
            destination = destination_of(rule.action)
            queue = self._queues.get(destination)
            if queue is None:
                queue = self._queues[destination] = deque()
            if capped and len(queue) >= self._max_queued:  # a slow one does not fill the memory
                self.stats["postponed"] += 1
                at = datetime.now(UTC) + timedelta(seconds=_BUSY_RETRY)
                self._writes.append(self._firings.postponed(doc, at))
                continue
            queue.append(doc)
            self._held += 1
        self._wake.set()

    def _start_some(self) -> None:
        """Start attempts, one destination after the other, while slots are free."""
        s = self._settings
        mono = time.monotonic()
        now = datetime.now(UTC)
        needed = timedelta(seconds=s.delivery_timeout + _MARGIN)
        for destination in list(self._queues):
            queue = self._queues[destination]
            breaker = self.breaker(destination)
            while queue and len(self._in_flight) < s.delivery_concurrency:
                if self._per_destination[destination] >= s.delivery_per_destination:
                    break
                doc = queue.popleft()
                self._held -= 1
                self._room.set()
                if doc["leaseUntil"] - now < needed:  # waited too long: hand it back
                    self.stats["expired"] += 1
                    self._writes.append(self._firings.postponed(doc, now))
                    continue
                if not breaker.allow(mono):  # paused: this destination's firings wait in MongoDB
                    self.stats["paused"] += 1
                    wait = timedelta(seconds=breaker.retry_at(mono) - mono)
                    self._writes.append(self._firings.postponed(doc, now + wait))
                    continue
                self._spawn(doc, destination)
            if not queue:
                del self._queues[destination]

    def _spawn(self, doc: dict[str, Any], destination: str) -> None:
        self._per_destination[destination] += 1
        task = asyncio.ensure_future(self._deliver(doc, destination))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self._wake.set()  # a slot is free

    # -- one delivery ------------------------------------------------------------------------
    async def _deliver(self, doc: dict[str, Any], destination: str) -> None:
        rule = self._rule(doc)  # as it is now: it may have changed while the firing waited
        try:
            if rule is None:
                self._record(doc, _NO_RULE)
                return
            outcome = await self._senders.send(rule.action, webhook_payload(doc))
        finally:
            self._per_destination[destination] -= 1
        breaker = self.breaker(destination)
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
        metrics.automation_delivery(status)  # "pending" here: an attempt that will be retried
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
