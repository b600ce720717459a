"""A seeded, realistic event workload: Zipf-skewed lead activity, web-like event mix, duplicates
and late events. Used by `make demo` and the benchmarks; pure (no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from core.timeutil import US_PER_DAY, US_PER_SECOND, format_timestamp

__all__ = ["Workload", "generate"]

EVENT_MIX: tuple[tuple[str, float], ...] = (
    ("page_view", 0.55),
    ("email_open", 0.12),
    ("pricing_page_visit", 0.07),
    ("download", 0.06),
    ("form_submit", 0.05),
    ("feature_used", 0.05),
    ("signup", 0.03),
    ("webinar_attendance", 0.025),
    ("unsubscribe", 0.015),
    ("demo_request", 0.015),
    ("contract_signed", 0.005),
)
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell")


@dataclass(frozen=True)
class Workload:
    events: list[dict[str, Any]]  # in send order, duplicates included
    distinct_event_ids: int
    lead_keys: list[str]


def generate(
    *,
    leads: int,
    events: int,
    now_us: int,
    days: int = 30,
    duplicate_rate: float = 0.03,
    late_rate: float = 0.05,
    zipf_s: float = 1.1,
    seed: int = 7,
) -> Workload:
    """`events` distinct events over `leads` leads in the last `days` days, then shuffled locally
    (late events) and salted with resent duplicates."""
    rng = random.Random(seed)
    keys = [f"anon-{i:06d}" if i % 3 else f"crm-{i:06d}" for i in range(leads)]
    weights = [1.0 / (rank + 1) ** zipf_s for rank in range(leads)]
    types = [t for t, _ in EVENT_MIX]
    type_weights = [w for _, w in EVENT_MIX]
    start = now_us - days * US_PER_DAY
    chosen = rng.choices(range(leads), weights=weights, k=events)
    stamps = sorted(rng.randrange(start, now_us - 60 * US_PER_SECOND) for _ in range(events))
    out: list[dict[str, Any]] = []
    for n, (lead, ts) in enumerate(zip(chosen, stamps, strict=True)):
        key = keys[lead]
        event: dict[str, Any] = {
            "eventId": f"ev-{seed}-{n:08d}",
            "eventType": rng.choices(types, weights=type_weights)[0],
            "timestamp": format_timestamp(ts),
            "properties": {"page": f"/p/{rng.randrange(50)}", "company": COMPANIES[lead % 8]},
        }
        event["leadId" if key.startswith("crm-") else "anonymousId"] = key
        out.append(event)
    # late events: move some events later in the send order than newer ones
    for i in range(len(out)):
        if rng.random() < late_rate:
            j = min(len(out) - 1, i + rng.randrange(1, 200))
            out[i], out[j] = out[j], out[i]
    # duplicates: resend some events (same eventId) later on
    dupes = [dict(rng.choice(out)) for _ in range(int(events * duplicate_rate))]
    for d in dupes:
        out.insert(rng.randrange(len(out) + 1), d)
    return Workload(out, events, sorted({keys[i] for i in chosen}))
