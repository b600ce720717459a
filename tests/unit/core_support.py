"""A tiny in-memory model of how the stream processor drives the pure core.

`MemoryLead` plays the scoring agent plus its table for one canonical lead: it deduplicates by
eventId (first occurrence wins), keeps the facts in (timestamp, eventId) order, and hands
`core.lead.apply_event` exactly what the real store will: nothing extra for an in-order event, the
predecessor fact and every successor fact for a late one. Tests compare what it accumulates with
`score_events`, the from-scratch reference.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.config import ScoringConfig, default_config
from core.lead import (
    Applied,
    EventFact,
    HistoryRow,
    LeadSummary,
    LeadView,
    NewEvent,
    apply_event,
    lead_view,
)
from core.scoring import count_in_window
from core.timeutil import parse_timestamp

__all__ = [
    "MemoryLead",
    "chain_fields",
    "golden_path",
    "load_golden",
    "new_event",
]


def new_event(
    event_id: str, event_type: str, timestamp: int, config: ScoringConfig | None = None
) -> NewEvent:
    """A NewEvent whose points are fixed by `config`'s rules, as the agent does at scoring time."""
    config = config or default_config()
    return NewEvent(timestamp, event_id, event_type, config.points_for(event_type))


def chain_fields(row: HistoryRow) -> tuple[str, str, int, int, str, str]:
    """A row without its properties, floats as hex so equality means bit-identical."""
    return (
        row.event_id,
        row.event_type,
        row.timestamp,
        row.points,
        row.score_before.hex(),
        row.score_after.hex(),
    )


@dataclass
class MemoryLead:
    config: ScoringConfig = field(default_factory=default_config)
    summary: LeadSummary = field(default_factory=lambda: LeadSummary("prj_test", "lead"))
    seen: dict[str, NewEvent] = field(default_factory=dict)
    facts: list[EventFact] = field(default_factory=list)  # sorted by (timestamp, eventId)
    history: dict[str, HistoryRow] = field(default_factory=dict)

    def add(self, event: NewEvent, properties: Mapping[str, Any] | None = None) -> Applied | None:
        """Score one event from the log; None when its eventId is already known (ignored)."""
        if event.event_id in self.seen:
            return None
        self.seen[event.event_id] = event
        last = self.summary.last_order
        if last is not None and event.order < last:
            at = bisect_left([fact.order for fact in self.facts], event.order)
            applied = apply_event(
                self.summary,
                event,
                self.config,
                properties=properties,
                predecessor=self.facts[at - 1] if at else None,
                successors=list(self.facts[at:]),
            )
        else:
            applied = apply_event(self.summary, event, self.config, properties=properties)
        self._store(applied)
        return applied

    def add_all(self, events: Iterable[NewEvent]) -> None:
        for event in events:
            self.add(event)

    def _store(self, applied: Applied) -> None:
        self.summary = applied.summary
        by_id = {fact.event_id: fact for fact in self.facts}
        by_id.update((fact.event_id, fact) for fact in applied.facts)
        self.facts = sorted(by_id.values(), key=lambda fact: fact.order)
        for row in applied.rows:
            old = self.history.get(row.event_id)
            if row.properties is None and old is not None:
                # A rescored row keeps the properties written with the event (as an upsert would).
                row = replace(row, properties=old.properties)
            self.history[row.event_id] = row

    def rows(self) -> list[HistoryRow]:
        """The timeline: the latest row per eventId, in (timestamp, eventId) order."""
        return sorted(self.history.values(), key=lambda row: (row.timestamp, row.event_id))

    def events_last_24h(self, now: int) -> int:
        return count_in_window((fact.timestamp for fact in self.facts), now)

    def view(self, now: int) -> LeadView:
        return lead_view(self.summary, now, self.config, self.events_last_24h(now))


_GOLDEN_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "docs" / "spec-golden.json",
    Path(__file__).resolve().parents[2] / "examples" / "spec-golden.json",
    Path("/work/shared/examples/spec-golden.json"),
)


def golden_path() -> Path:
    """SPEC's worked example: $LEADSCORE_SPEC_GOLDEN, else the repo's docs/ or examples/, else the
    shared examples directory. Missing is a failure, not a skip: it is the contract."""
    override = os.environ.get("LEADSCORE_SPEC_GOLDEN")
    candidates = (Path(override),) if override else _GOLDEN_CANDIDATES
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"spec-golden.json not found in any of {[str(c) for c in candidates]}")


def load_golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(golden_path().read_text(encoding="utf-8"))
    data["now_us"] = parse_timestamp(data["now"])
    return data
