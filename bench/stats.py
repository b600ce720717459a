"""Percentiles and rates, with no dependencies (shared by the suite and the load generator)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["distribution", "median_run", "percentile", "steady_rate"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median_run(runs: Sequence[dict[str, Any]], rate: str = "eventsPerSec") -> dict[str, Any]:
    """The run with the median `rate` (the upper one of an even count), with every run's rate
    under `runs`; the first run when none has a rate."""
    rates = sorted(r[rate] for r in runs if r.get(rate))
    chosen = next((r for r in runs if rates and r.get(rate) == rates[len(rates) // 2]), runs[0])
    return {**chosen, "runs": [r.get(rate) for r in runs]}


def distribution(values_s: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99/max in milliseconds of durations given in seconds."""
    v = sorted(values_s)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50Ms": round(percentile(v, 50) * 1000, 2),
        "p95Ms": round(percentile(v, 95) * 1000, 2),
        "p99Ms": round(percentile(v, 99) * 1000, 2),
        "maxMs": round(v[-1] * 1000, 2),
        "meanMs": round(sum(v) / len(v) * 1000, 2),
    }


def steady_rate(
    samples: Sequence[tuple[float, int]], total: int, lo: float = 0.1, hi: float = 0.9
) -> float | None:
    """Rate between the moments `lo` and `hi` of `total` were reached, from (time, count) samples
    (linear interpolation between samples); leaves out start-up and the tail."""

    def when(target: float) -> float | None:
        prev: tuple[float, int] | None = None
        for t, c in samples:
            if c >= target:
                if prev is None or c == prev[1]:
                    return t
                pt, pc = prev
                return pt + (t - pt) * (target - pc) / (c - pc)
            prev = (t, c)
        return None

    a, b = when(lo * total), when(hi * total)
    if a is None or b is None or b <= a:
        return None
    return (hi - lo) * total / (b - a)
