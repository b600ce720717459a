"""Automation rules are storable by construction (SPEC 9, 12): strict models, http(s) URLs
only, one-line subjects, real addresses; a project record holding rules parses back from its
wire format; secrets are masked when shown."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.automations import AutomationIn, AutomationModel, shown
from app.records import ProjectRecord

RULE: dict[str, Any] = {
    "name": "Tell sales",
    "trigger": {"kind": "stage_reached", "stage": "qualified"},
    "conditions": {"minVelocity": 2},
    "action": {"type": "webhook", "url": "https://crm.example/hook", "secret": "s" * 20},
}


def refused(body: Any) -> set[str]:
    with pytest.raises(ValidationError) as info:
        AutomationIn.model_validate(body)
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": {"type": "webhook", "url": "javascript:alert(1)"}}, "action.webhook.url"),
        ({"action": {"type": "webhook", "url": "file:///etc/passwd"}}, "action.webhook.url"),
        ({"action": {"type": "slack", "webhookUrl": "gopher://x"}}, "action.slack.webhookUrl"),
        ({"action": {"type": "email", "to": "a@b.example", "subject": "s"}}, "action.email.to"),
        ({"action": {"type": "email", "to": ["a@b"], "subject": "x\ny"}}, "action.email.subject"),
        ({"action": {"type": "sms"}}, "action"),
        (
            {"trigger": {"kind": "score_crossed", "threshold": float("inf")}},
            "trigger.score_crossed.threshold",
        ),
        ({"trigger": {"kind": "event", "eventType": "has space"}}, "trigger.event.eventType"),
        ({"conditions": {"stages": []}}, "conditions.stages"),
        ({"conditions": {"minScore": "10"}}, "conditions.minScore"),
        ({"active": "yes"}, "active"),
        ({"name": ""}, "name"),
    ],
)
def test_invalid_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    assert field in refused({**RULE, **change})


def test_a_project_with_rules_survives_its_wire_format() -> None:
    rule = AutomationModel(id="aut_1", **dict(AutomationIn.model_validate(RULE)))
    record = ProjectRecord(projectId="p", name="n", automations=[rule])
    assert [r.id for r in record.active_automations] == ["aut_1"]
    again = ProjectRecord.model_validate(orjson.loads(record.to_wire()))
    assert again.automations == record.automations
    assert again.active_automations == record.active_automations
    assert "automations" not in record.public()


def test_secrets_are_masked_when_shown() -> None:
    rule = AutomationModel(id="a", **dict(AutomationIn.model_validate(RULE)))
    assert shown(rule)["action"]["secret"] == "…ssss"
    slack = AutomationModel.model_validate(
        {
            **RULE,
            "id": "b",
            "action": {"type": "slack", "webhookUrl": "https://hooks.example/T/B/topsecret"},
        }
    )
    assert "topsecret" not in str(shown(slack))
