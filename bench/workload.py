"""The benchmark workload: `app.sample_data.generate` (seeded, Zipf-skewed, duplicates and late
events) turned into records of the SPEC 2 wire format for the events topic."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from app.partitioning import partition_for
from app.sample_data import generate
from core.timeutil import parse_timestamp

__all__ = ["WireWorkload", "build"]


@dataclass(frozen=True)
class WireWorkload:
    project_id: str
    records: list[tuple[bytes, bytes]]  # (key, value) in send order, duplicates included
    distinct_events: int
    per_lead: dict[str, int]  # lead key -> distinct events (the eventCount MongoDB must show)
    late_per_lead: dict[str, int]  # lead key -> distinct events that arrive after a later one
    partition_shares: list[float]  # share of the records on each partition, largest first

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def leads(self) -> int:
        return len(self.per_lead)

    def describe(self) -> dict[str, Any]:
        counts = sorted(self.per_lead.values(), reverse=True)
        return {
            "records": self.total,
            "distinctEvents": self.distinct_events,
            "duplicates": self.total - self.distinct_events,
            "leads": self.leads,
            "eventsPerLeadMean": round(self.distinct_events / max(1, self.leads), 1),
            "eventsPerLeadMax": counts[0] if counts else 0,
            "eventsPerLeadMedian": counts[len(counts) // 2] if counts else 0,
            "avgValueBytes": round(sum(len(v) for _, v in self.records) / max(1, self.total), 1),
            "lateEvents": sum(self.late_per_lead.values()),
            "partitionShares": self.partition_shares,
        }


def build(
    project_id: str,
    *,
    leads: int,
    events: int,
    seed: int = 7,
    now_us: int | None = None,
    late_rate: float = 0.05,
    duplicate_rate: float = 0.03,
    partitions: int = 8,
) -> WireWorkload:
    now = now_us if now_us is not None else time.time_ns() // 1000
    workload = generate(
        leads=leads,
        events=events,
        now_us=now,
        seed=seed,
        late_rate=late_rate,
        duplicate_rate=duplicate_rate,
    )
    records: list[tuple[bytes, bytes]] = []
    seen: dict[str, set[str]] = {}
    newest: dict[str, tuple[int, str]] = {}
    late: Counter[str] = Counter()
    for event in workload.events:
        lead = event.get("leadId") or event["anonymousId"]
        wire = {"projectId": project_id, **event}
        records.append((f"{project_id}:{lead}".encode(), orjson.dumps(wire)))
        ids = seen.setdefault(lead, set())
        if event["eventId"] in ids:
            continue
        ids.add(event["eventId"])
        order = (parse_timestamp(event["timestamp"]), event["eventId"])
        if lead in newest and order < newest[lead]:
            late[lead] += 1  # lands before facts already stored: the later ones are rescored
        else:
            newest[lead] = order
    per_lead = {lead: len(ids) for lead, ids in seen.items()}
    distinct = sum(per_lead.values())
    assert distinct == workload.distinct_event_ids, (distinct, workload.distinct_event_ids)
    shares = Counter(partition_for(k, partitions) for k, _ in records)
    partition_shares = sorted((round(n / len(records), 3) for n in shares.values()), reverse=True)
    return WireWorkload(project_id, records, distinct, per_lead, dict(late), partition_shares)


BUCKETS = ((1, 1), (2, 10), (11, 100), (101, 1000), (1001, 10**12))


def bucket_of(n: int) -> str:
    for lo, hi in BUCKETS:
        if lo <= n <= hi:
            return f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**12 else f">{lo - 1}")
    return "0"
