"""Bytes written to the tables' changelog topics, per event, attributed to leads and key kinds.

Reads every changelog record of a deployment's app version and sums key + value bytes. Each
record is attributed to its lead whatever the table layout: its key is the lead key, or a
1-byte kind tag and/or a 2-byte length prefix in front of it (the layouts of `tables/`). The
kind of a record is its table, plus the tag when the table holds several kinds of key (e.g.
`lead-state:S` summary, `:F` fact, `:E` dedup entry). A record whose key was already written
is an *overwrite*: the summary is overwritten by every event of its lead by design; a fact is
overwritten only when a late event rescored it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.kafkautil import list_topics, scan_topic
from bench.workload import WireWorkload, bucket_of

__all__ = ["changelog_topics", "measure"]


async def changelog_topics(bootstrap: str, prefix: str, group: str) -> list[str]:
    other_version = re.compile(rf"^{re.escape(prefix)}-v\d+-")
    return sorted(
        t
        for t in await list_topics(bootstrap)
        if t.startswith(group + "-")
        and t.endswith("-changelog")
        and (group != prefix or not other_version.match(t))
    )


def _attribute(key: bytes, known: dict[bytes, str]) -> tuple[str | None, str]:
    """(lead, tag) of a changelog key; tag is '' or the 1-byte kind tag in front of the lead."""
    for offset in (0, 1):
        tag = key[:offset].decode(errors="replace")
        body = key[offset:]
        lead = known.get(body)
        if lead is None and len(body) > 2:
            lead = known.get(body[2 : 2 + int.from_bytes(body[:2], "big")])
        if lead is not None:
            return lead, tag
    return None, "?"


async def measure(
    bootstrap: str, prefix: str, group: str, partitions: int, workload: WireWorkload,
    log_dirs: Iterable[Path] = (),
) -> dict[str, Any]:  # fmt: skip
    topics = await changelog_topics(bootstrap, prefix, group)
    known = {f"{workload.project_id}:{lead}".encode(): lead for lead in workload.per_lead}
    kinds: dict[str, Counter[str]] = {}
    per_lead: dict[tuple[str, str], Counter[str]] = {}  # (lead, kind) -> bytes/records/overwrites
    for topic in topics:
        table = topic[len(group) + 1 : -len("-changelog")]
        written: set[bytes] = set()

        def visit(_p: int, r: Any, table: str = table, written: set[bytes] = written) -> None:
            key = r.key or b""
            size = len(key) + len(r.value or b"")
            lead, tag = _attribute(key, known)
            kind = f"{table}:{tag}" if tag else table
            k = kinds.setdefault(kind, Counter())
            k["records"] += 1
            k["bytes"] += size
            k["tombstones"] += r.value is None
            c = per_lead.setdefault((lead or "?", kind), Counter())
            c["records"] += 1
            c["bytes"] += size
            if key in written:
                k["overwrites"] += 1
                c["overwrites"] += 1
                c["overwriteBytes"] += size
            else:
                written.add(key)

        await scan_topic(bootstrap, topic, partitions, visit)

    distinct = workload.distinct_events
    total_bytes = sum(k["bytes"] for k in kinds.values())
    total_records = sum(k["records"] for k in kinds.values())
    by_kind = {
        kind: {
            "records": k["records"],
            "bytes": k["bytes"],
            "overwrites": k["overwrites"],
            "tombstones": k["tombstones"],
            "bytesPerEvent": round(k["bytes"] / distinct, 1),
            "recordsPerEvent": round(k["records"] / distinct, 3),
            "bytesPerRecord": round(k["bytes"] / max(1, k["records"]), 1),
        }
        for kind, k in sorted(kinds.items())
        if k["records"]
    }
    fact_kinds = {kind for kind in by_kind if "fact" in kind or kind.endswith(":F")}

    def group_stats(leads: list[str]) -> dict[str, Any]:
        events = sum(workload.per_lead[lead] for lead in leads)
        late = sum(workload.late_per_lead.get(lead, 0) for lead in leads)
        out: dict[str, Any] = {"leads": len(leads), "events": events, "lateEvents": late}
        nbytes = records = fact_over = fact_over_bytes = 0
        per_kind: dict[str, float] = {}
        for kind in by_kind:
            b = sum(per_lead.get((lead, kind), Counter())["bytes"] for lead in leads)
            r = sum(per_lead.get((lead, kind), Counter())["records"] for lead in leads)
            if kind in fact_kinds:
                for lead in leads:
                    c = per_lead.get((lead, kind), Counter())
                    fact_over += c["overwrites"]
                    fact_over_bytes += c["overwriteBytes"]
            per_kind[kind] = round(b / max(1, events), 1)
            nbytes += b
            records += r
        out["bytesPerEvent"] = round(nbytes / max(1, events), 1)
        out["recordsPerEvent"] = round(records / max(1, events), 3)
        out["bytesPerEventByKind"] = per_kind
        # what an event writes itself, without rescoring the facts after a late one
        out["bytesPerEventWithoutRewrites"] = round((nbytes - fact_over_bytes) / max(1, events), 1)
        out["factRewritesPerLateEvent"] = round(fact_over / late, 2) if late else None
        return out

    buckets: dict[str, list[str]] = {}
    for lead, n in workload.per_lead.items():
        buckets.setdefault(bucket_of(n), []).append(lead)
    ranked = sorted(workload.per_lead, key=lambda lead: -workload.per_lead[lead])
    top = ranked[: max(1, len(ranked) // 100)]
    unattributed = sum(c["bytes"] for (lead, _), c in per_lead.items() if lead == "?")
    return {
        "group": group,
        "topics": topics,
        "distinctEvents": distinct,
        "lateEvents": sum(workload.late_per_lead.values()),
        "bytesPerEvent": round(total_bytes / distinct, 1),
        "recordsPerEvent": round(total_records / distinct, 3),
        "bytesPerEventWithoutRewrites": round(
            (
                total_bytes
                - sum(
                    c["overwriteBytes"] for (_, kind), c in per_lead.items() if kind in fact_kinds
                )
            )
            / distinct,
            1,
        ),
        "kinds": by_kind,
        "byEventsPerLead": [
            {"eventsPerLead": name, **group_stats(leads)}
            for name, leads in sorted(buckets.items(), key=lambda kv: _order(kv[0]))
        ],
        "busiest1pct": group_stats(top),
        "rest": group_stats(ranked[len(top) :]),
        "unattributedBytes": unattributed,
        "onDiskBytesPerEvent": _disk(log_dirs, topics, distinct),
    }


def _order(name: str) -> int:
    digits = re.findall(r"\d+", name)
    return int(digits[0]) if digits else 0


def _disk(log_dirs: Iterable[Path], topics: list[str], distinct: int) -> float | None:
    """Bytes of the changelog partitions' log segments on the local broker's disk."""
    total = 0
    for root in log_dirs:
        for topic in topics:
            for part in root.glob(f"{topic}-*"):
                if part.name.rsplit("-", 1)[0] == topic:
                    total += sum(f.stat().st_size for f in part.glob("*.log"))
    return round(total / distinct, 1) if total else None
