"""Settings and rules are storable by construction (SPEC 12): strict, finite, ranged, ordered, and
the project record always parses back from its wire format (issue 10 finding 1)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.records import ProjectRecord, ProjectSettings, RuleModel


def refused(model: Any, body: Any) -> set[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999", "100", None, True, float("inf")])
def test_finding_1_thresholds_are_strict_finite_numbers(value: Any) -> None:
    body = {"stageThresholds": {"qualified": value}}
    assert refused(ProjectSettings, body) == {"stageThresholds.qualified"}


@pytest.mark.parametrize(
    "thresholds",
    [
        {"qualified": 50, "hot": 60, "warm": 30},
        {"qualified": 100, "hot": 60, "warm": 60},
        {"qualified": 100, "hot": 60, "warm": -1},
        {"qualified": 1e13, "hot": 60, "warm": 30},
    ],
)
def test_thresholds_are_ordered_and_ranged(thresholds: dict[str, Any]) -> None:
    fields = refused(ProjectSettings, {"stageThresholds": thresholds})
    assert fields and all(f.startswith("stageThresholds") for f in fields)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"graceDays": "7"}, "graceDays"),
        ({"graceDays": 7.0}, "graceDays"),
        ({"graceDays": -1}, "graceDays"),
        ({"graceDays": 2**63}, "graceDays"),
        ({"dailyRate": "0.1"}, "dailyRate"),
        ({"dailyRate": 1.5}, "dailyRate"),
        ({"dailyRate": float("nan")}, "dailyRate"),
        ({"extra": 1}, "extra"),
    ],
)
def test_decay_parameters_are_strict_and_in_range(body: dict[str, Any], field: str) -> None:
    assert refused(ProjectSettings, body) == {field}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points": "5"}, "points"),
        ({"points": 5.5}, "points"),
        ({"points": 2**63}, "points"),
        ({"points": 1_000_001}, "points"),
        ({"points": 5, "active": "yes"}, "active"),
        ({"points": 5, "active": 1}, "active"),
    ],
)
def test_rules_are_strict_bounded_integers_and_booleans(body: dict[str, Any], field: str) -> None:
    assert refused(RuleModel, body) == {field}


finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    grace=st.integers(0, 3650),
    rate=st.floats(0, 1),
    warm=finite,
    gaps=st.tuples(finite, finite),
    points=st.integers(-1_000_000, 1_000_000),
)
def test_every_valid_project_record_parses_back_from_its_wire_format(
    grace: int, rate: float, warm: float, gaps: tuple[float, float], points: int
) -> None:
    hot, qualified = warm + gaps[0], warm + gaps[0] + gaps[1]
    try:
        project_settings = ProjectSettings.model_validate(
            {
                "graceDays": grace,
                "dailyRate": rate,
                "stageThresholds": {"qualified": qualified, "hot": hot, "warm": warm},
            }
        )
    except ValidationError:
        return  # not ordered after float rounding, or out of range: refused, fine
    record = ProjectRecord(
        projectId="p", name="n", settings=project_settings, rules={"x": RuleModel(points=points)}
    )
    assert ProjectRecord.model_validate(orjson.loads(record.to_wire())) == record


def test_a_record_that_would_not_parse_back_is_never_encoded() -> None:
    record = ProjectRecord(projectId="p", name="n")
    # a change that bypassed validation (model_construct) must not reach the topic
    record.settings.stageThresholds.__dict__["qualified"] = float("inf")
    with pytest.raises(ValueError, match="wire format"):
        record.to_wire()
