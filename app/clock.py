"""The worker's notion of now (SPEC 1): the wall clock, or a fixed instant for tests and demos."""

from __future__ import annotations

import time

from app.settings import settings
from core.timeutil import parse_timestamp

__all__ = ["now_us"]

_FIXED = parse_timestamp(settings.fixed_now) if settings.fixed_now else None


def now_us() -> int:
    """Microseconds since the epoch; only decay and the 24-hour window depend on it."""
    return _FIXED if _FIXED is not None else time.time_ns() // 1_000
