"""The invariants `GET /api/admin/system-health` checks (pure: documents in, violations out)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.config import ScoringConfig
from core.scoring import step

__all__ = ["Violation", "check_aliases", "check_history_chain", "check_lead_against_table"]

_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    lead_id: str | None
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "leadId": self.lead_id, "detail": self.detail}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)


def check_history_chain(
    lead_id: str, rows: Sequence[Mapping[str, Any]], config: ScoringConfig
) -> list[Violation]:
    """SPEC 4: rows in (timestamp, eventId) order form the decay chain from 0, never negative."""
    found: list[Violation] = []
    previous: Mapping[str, Any] | None = None
    for row in rows:
        if row["scoreAfter"] < 0 or row["scoreBefore"] < 0:
            found.append(Violation("non_negative_scores", lead_id, f"row {row['eventId']}"))
        if previous is None:
            expected_before = 0.0
            expected_after = max(0.0, float(row["points"]))
        else:
            gap = row["timestampUs"] - previous["timestampUs"]
            expected_before, expected_after = step(
                previous["scoreAfter"], gap, row["points"], config
            )
        if not (
            _close(row["scoreBefore"], expected_before)
            and _close(row["scoreAfter"], expected_after)
        ):
            found.append(
                Violation(
                    "history_chain",
                    lead_id,
                    f"row {row['eventId']}: {row['scoreBefore']}->{row['scoreAfter']}, "
                    f"expected {expected_before}->{expected_after}",
                )
            )
            break  # one broken link is enough to name the lead
        previous = row
    return found


def check_lead_against_table(
    doc: Mapping[str, Any], table: Mapping[str, Any] | None, history_rows: int
) -> list[Violation]:
    """MongoDB's lead equals the owning worker's table state; one history row per event."""
    lead_id = doc["leadId"]
    found: list[Violation] = []
    if doc.get("currentScore", 0) < 0:
        found.append(
            Violation("non_negative_scores", lead_id, f"currentScore {doc['currentScore']}")
        )
    if table is None:
        found.append(Violation("mongo_equals_tables", lead_id, "in MongoDB but not in any table"))
        return found
    for field in ("eventCount", "email", "scoreAtLastEvent"):
        if field == "scoreAtLastEvent":
            same = _close(float(doc.get(field) or 0.0), float(table.get(field) or 0.0))
        else:
            same = doc.get(field) == table.get(field)
        if not same:
            found.append(
                Violation(
                    "mongo_equals_tables",
                    lead_id,
                    f"{field}: MongoDB {doc.get(field)!r}, table {table.get(field)!r}",
                )
            )
    if history_rows != doc.get("eventCount"):
        found.append(
            Violation(
                "one_history_row_per_event",
                lead_id,
                f"{history_rows} history rows for eventCount {doc.get('eventCount')}",
            )
        )
    return found


def check_aliases(
    live_ids: Iterable[str], aliases_by_lead: Mapping[str, Iterable[str]]
) -> list[Violation]:
    """No key is both a canonical lead and an alias of another."""
    live = set(live_ids)
    return [
        Violation("canonical_or_alias", alias, f"alias of {lead_id} and a lead of its own")
        for lead_id, aliases in aliases_by_lead.items()
        for alias in aliases
        if alias in live and alias != lead_id
    ]
