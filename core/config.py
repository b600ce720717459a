"""Per-project scoring configuration: rules, stage thresholds and decay (SPEC 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_RULES",
    "Rule",
    "ScoringConfig",
    "StageThresholds",
    "default_config",
]


@dataclass(frozen=True, slots=True)
class Rule:
    points: int
    active: bool = True


@dataclass(frozen=True, slots=True)
class StageThresholds:
    qualified: float = 100.0
    hot: float = 60.0
    warm: float = 30.0


DEFAULT_RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "page_view": Rule(5),
        "email_open": Rule(10),
        "download": Rule(15),
        "form_submit": Rule(20),
        "signup": Rule(30),
        "pricing_page_visit": Rule(15),
        "webinar_attendance": Rule(25),
        "demo_request": Rule(50),
        "contract_signed": Rule(100),
        "unsubscribe": Rule(-20),
    }
)


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    rules: Mapping[str, Rule] = field(default_factory=lambda: DEFAULT_RULES)
    thresholds: StageThresholds = field(default_factory=StageThresholds)
    grace_days: int = 7
    daily_rate: float = 0.05

    def points_for(self, event_type: str) -> int:
        """Points of an event type under the active rules; 0 without an active rule."""
        rule = self.rules.get(event_type)
        if rule is None or not rule.active:
            return 0
        return rule.points


def default_config() -> ScoringConfig:
    return ScoringConfig()
