"""SPEC 9 rules through the API: strict validation naming each field, secrets never listed back
in full (nor in the audit log), the per-project cap, update/disable/delete applied without a
restart, and the firing list's filters. Rights per route are in test_access_matrix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.automation_support import (
    TODAY,
    Receiver,
    create_rule,
    event,
    firings,
    wait_firings,
)
from tests.integration.support import Api, eventually

pytestmark = pytest.mark.integration

SECRET = "api-secret-0123456789abcdef"


def rule_body(url: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Tell sales",
        "trigger": {"kind": "stage_reached", "stage": "qualified"},
        "conditions": {"minVelocity": 2},
        "action": {"type": "webhook", "url": url, "secret": SECRET},
    }
    body.update(over)
    return body


async def field_errors(api: Api, body: Any) -> set[str]:
    status, answer = await api.post("/api/automations", body)
    assert status == 422, answer
    return {f["field"] for f in answer["fields"]}


async def test_invalid_rules_are_refused_naming_each_field(auto_api: Api) -> None:
    url = "https://crm.example/hook"
    assert "action.webhook.url" in await field_errors(auto_api, rule_body("ftp://crm.example/hook"))
    assert "action.webhook.url" in await field_errors(auto_api, rule_body("not a url"))
    assert "trigger.stage_reached.stage" in await field_errors(
        auto_api, rule_body(url, trigger={"kind": "stage_reached", "stage": "boiling"})
    )
    assert "trigger" in await field_errors(auto_api, rule_body(url, trigger={"kind": "moon"}))
    assert "trigger.score_crossed.threshold" in await field_errors(
        auto_api, rule_body(url, trigger={"kind": "score_crossed", "threshold": "100"})
    )
    assert "conditions.minVelocity" in await field_errors(
        auto_api, rule_body(url, conditions={"minVelocity": 11})
    )
    assert "action.email.to.0" in await field_errors(
        auto_api,
        rule_body(url, action={"type": "email", "to": ["not-an-address"], "subject": "x"}),
    )
    assert "action.email.subject" in await field_errors(
        auto_api,
        rule_body(url, action={"type": "email", "to": ["a@b.example"], "subject": "a\r\nBcc: x"}),
    )
    assert "action.webhook.secret" in await field_errors(
        auto_api, rule_body(url, action={"type": "webhook", "url": url, "secret": "short"})
    )
    assert "id" in await field_errors(auto_api, {**rule_body(url), "id": "mine"})
    status, body = await auto_api.get("/api/automations")
    assert status == 200 and body["automations"] == []  # nothing was stored


async def test_secrets_are_never_listed_back_in_full(auto_api: Api) -> None:
    created = await create_rule(auto_api, rule_body("https://crm.example/hook"))
    assert created["action"]["secret"] == "…" + SECRET[-4:]
    generated = await create_rule(
        auto_api,
        rule_body(
            "https://crm.example/other", action={"type": "webhook", "url": "https://x.example/h"}
        ),
    )
    shown_once = generated["action"]["secret"]
    assert shown_once.startswith("whsec_") and len(shown_once) > 20
    slack_url = "https://hooks.slack.example/services/T0/B0/verysecretpart"
    slack = await create_rule(
        auto_api, rule_body("https://x", action={"type": "slack", "webhookUrl": slack_url})
    )
    status, listed = await auto_api.get("/api/automations")
    assert status == 200
    text = str(listed)
    assert SECRET not in text and shown_once not in text and "verysecretpart" not in text
    status, one = await auto_api.get(f"/api/automations/{slack['id']}")
    assert status == 200 and "verysecretpart" not in str(one)
    status, audit = await auto_api.get("/api/audit-log")
    assert status == 200
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("automation.create") == 3
    assert SECRET not in str(audit) and shown_once not in str(audit)
    status, current = await auto_api.get("/api/projects/current")
    assert status == 200 and "automations" not in current


async def test_a_project_holds_at_most_the_configured_number_of_rules(auto_api: Api) -> None:
    for n in range(8):  # LEADSCORE_MAX_AUTOMATIONS=8 on the test worker
        await create_rule(auto_api, rule_body(f"https://crm.example/{n}"))
    status, body = await auto_api.post("/api/automations", rule_body("https://crm.example/9"))
    assert status == 409 and "LEADSCORE_MAX_AUTOMATIONS" in body["error"]


async def test_update_disable_and_delete_apply_without_a_restart(
    auto_api: Api, receiver: Receiver
) -> None:
    rule = await create_rule(
        auto_api,
        rule_body(
            receiver.url("/edit"),
            trigger={"kind": "event", "eventType": "signup"},
            conditions={},
        ),
    )
    # disabled: nothing fires
    status, body = await auto_api.put(
        f"/api/automations/{rule['id']}",
        {
            **rule_body(
                receiver.url("/edit"),
                trigger={"kind": "event", "eventType": "signup"},
                conditions={},
            ),
            "active": False,
        },
    )
    assert status == 200 and body["active"] is False, body
    await auto_api.send_events([event("u1", "signup", f"{TODAY}T09:00:00Z", "u1")])
    await eventually(lambda: auto_api.get("/api/leads/u1"), lambda r: r[0] == 200)
    # enabled again, on another event type, without a secret: the old one is kept
    status, body = await auto_api.put(
        f"/api/automations/{rule['id']}",
        {
            "name": "Renamed",
            "trigger": {"kind": "event", "eventType": "download"},
            "action": {"type": "webhook", "url": receiver.url("/edit")},
        },
    )
    assert status == 200 and body["action"]["secret"] == "…" + SECRET[-4:], body
    await auto_api.send_events([event("u2", "download", f"{TODAY}T09:00:00Z", "u2")])
    [fired] = await wait_firings(auto_api, rule["id"], 1, status="delivered")
    assert fired["leadId"] == "u2" and fired["ruleName"] == "Renamed"
    assert await firings(auto_api, rule["id"], "pending") == []
    [req] = receiver.at("/edit")
    assert req.json["lead"]["leadId"] == "u2"
    status, _ = await auto_api.request("DELETE", f"/api/automations/{rule['id']}")
    assert status == 200
    status, _ = await auto_api.get(f"/api/automations/{rule['id']}")
    assert status == 404
    status, body = await auto_api.get(f"/api/automations/{rule['id']}/firings?status=nope")
    assert status == 404  # the rule is gone: its firings are not listed under it


async def test_firings_are_filtered_by_status_and_lead(auto_api: Api, receiver: Receiver) -> None:
    rule = await create_rule(
        auto_api,
        rule_body(
            receiver.url("/filter"), trigger={"kind": "event", "eventType": "signup"}, conditions={}
        ),
    )
    await auto_api.send_events(
        [
            event("f1", "signup", f"{TODAY}T09:00:00Z", "f1"),
            event("f2", "signup", "2026-11-10T09:00:00Z", "f2"),  # stale: skipped
        ]
    )
    await wait_firings(auto_api, rule["id"], 1, status="delivered")
    await wait_firings(auto_api, rule["id"], 1, status="skipped")
    status, body = await auto_api.get(f"/api/automations/{rule['id']}/firings?leadId=f2")
    assert status == 200 and [f["leadId"] for f in body["firings"]] == ["f2"]
    status, body = await auto_api.get(f"/api/automations/{rule['id']}/firings?status=bogus")
    assert status == 400 and body["fields"][0]["field"] == "status"
