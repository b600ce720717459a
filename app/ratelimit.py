"""Rate limits per credential and the login throttle, counted in this process's memory with
the `limits` library (moving windows). Every process counts on its own: with N processes behind
a load balancer a credential gets up to N times the configured rate (README, "Rate limits")."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["LoginThrottle", "RateDecision", "RateLimits"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset_seconds))
        return out


class RateLimits:
    def __init__(self, default: str, publishable: str) -> None:
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._default = parse(default)
        self._publishable = parse(publishable)

    def hit(self, identity: str, publishable: bool) -> RateDecision:
        item = self._publishable if publishable else self._default
        allowed = self._limiter.hit(item, identity)
        return _decision(self._limiter, item, identity, allowed)


class LoginThrottle:
    """Failed logins per e-mail and per client address: after `slow_after` failures in the
    window each attempt is delayed (doubling, at most 8 s); after `lock_after` they are refused
    until the window has passed."""

    def __init__(self, slow_after: int, lock_after: int, window_seconds: float) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._slow_after = slow_after
        self._item: RateLimitItem = RateLimitItemPerSecond(
            max(1, lock_after), max(1, math.ceil(window_seconds))
        )

    def _failures(self, identity: str) -> tuple[int, int]:
        stats = self._limiter.get_window_stats(self._item, identity)
        return self._item.amount - stats.remaining, max(
            0, math.ceil(stats.reset_time - time.time())
        )

    def check(self, identities: list[str]) -> tuple[float, int | None]:
        """(seconds to delay this attempt, seconds until retry if refused else None)."""
        worst, retry = 0, 0
        for identity in identities:
            failures, reset = self._failures(identity)
            if failures >= self._item.amount:
                retry = max(retry, reset)
            worst = max(worst, failures)
        if retry:
            return 0.0, max(1, retry)
        if worst >= self._slow_after:
            return min(8.0, 0.5 * 2 ** (worst - self._slow_after)), None
        return 0.0, None

    def failed(self, identities: list[str]) -> None:
        for identity in identities:
            self._limiter.hit(self._item, identity)

    def succeeded(self, identities: list[str]) -> None:
        for identity in identities:
            self._limiter.clear(self._item, identity)


def _decision(
    limiter: MovingWindowRateLimiter, item: RateLimitItem, identity: str, allowed: bool
) -> RateDecision:
    stats = limiter.get_window_stats(item, identity)
    return RateDecision(
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, stats.remaining),
        reset_seconds=max(0, math.ceil(stats.reset_time - time.time())),
    )
