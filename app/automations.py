"""Automation rules as the API takes them and the project record stores them (SPEC 9).

Strict pydantic models: a rule that passes validation can be stored, published on the projects
topic, evaluated and delivered. Secrets (the webhook signing secret, the Slack webhook URL, which
is itself a credential) are stored because delivery needs them, but never listed back in full.
"""

from __future__ import annotations

import re
import secrets
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from yarl import URL

from core.automation import AutomationRule, Conditions, Trigger
from core.events import EVENT_TYPE_PATTERN

__all__ = [
    "AutomationIn",
    "AutomationModel",
    "DestinationUrl",
    "EmailAction",
    "SlackAction",
    "WebhookAction",
    "destination_of",
    "new_automation_id",
    "shown",
]

_STRICT = ConfigDict(extra="forbid", strict=True)
Stage = Literal["cold", "warm", "hot", "qualified"]
# one address; no whitespace, so nothing can smuggle another header into the message
_EMAIL_RE = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _url(value: str) -> str:
    if len(value) > 2048 or value != value.strip():
        raise ValueError("must be an http(s) URL of at most 2048 characters")
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("must be an http(s) URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http or https URL with a host")
    return value


def _email(value: str) -> str:
    if not _EMAIL_RE.match(value):
        raise ValueError("must be an e-mail address")
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be one line")
    return value


DestinationUrl = Annotated[str, AfterValidator(_url)]
EmailAddress = Annotated[str, AfterValidator(_email)]


class StageReached(BaseModel):
    model_config = _STRICT
    kind: Literal["stage_reached"]
    stage: Stage


class ScoreCrossed(BaseModel):
    model_config = _STRICT
    kind: Literal["score_crossed"]
    threshold: float = Field(ge=0, le=1e12, allow_inf_nan=False)


class EventTrigger(BaseModel):
    model_config = _STRICT
    kind: Literal["event"]
    eventType: str = Field(pattern=EVENT_TYPE_PATTERN)


TriggerModel = Annotated[StageReached | ScoreCrossed | EventTrigger, Field(discriminator="kind")]


class ConditionsModel(BaseModel):
    model_config = _STRICT
    minScore: float | None = Field(default=None, ge=0, le=1e12, allow_inf_nan=False)
    minVelocity: int | None = Field(default=None, ge=0, le=10)
    stages: list[Stage] | None = Field(default=None, min_length=1, max_length=4)


class WebhookAction(BaseModel):
    model_config = _STRICT
    type: Literal["webhook"]
    url: DestinationUrl
    # absent on create: one is generated and shown once; absent on update: the old one is kept
    secret: str | None = Field(default=None, min_length=16, max_length=256)


class SlackAction(BaseModel):
    model_config = _STRICT
    type: Literal["slack"]
    webhookUrl: DestinationUrl


class EmailAction(BaseModel):
    model_config = _STRICT
    type: Literal["email"]
    to: list[EmailAddress] = Field(min_length=1, max_length=20)
    subject: Annotated[str, AfterValidator(_one_line)] = Field(min_length=1, max_length=200)


ActionModel = Annotated[WebhookAction | SlackAction | EmailAction, Field(discriminator="type")]


class AutomationIn(BaseModel):
    """A rule as a client sends it (POST and PUT)."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=200)
    active: bool = True
    trigger: TriggerModel
    conditions: ConditionsModel = Field(default_factory=ConditionsModel)
    action: ActionModel


class AutomationModel(AutomationIn):
    """A stored rule: with its id. Read from our own records, so not strict about JSON types."""

    model_config = ConfigDict(extra="ignore", strict=False)
    id: str

    @cached_property
    def trigger_json(self) -> dict[str, Any]:
        return self.trigger.model_dump(mode="json")

    @cached_property
    def core(self) -> AutomationRule:
        t = self.trigger
        trigger = Trigger(
            kind=t.kind,
            stage=t.stage if isinstance(t, StageReached) else None,
            threshold=t.threshold if isinstance(t, ScoreCrossed) else None,
            event_type=t.eventType if isinstance(t, EventTrigger) else None,
        )
        c = self.conditions
        return AutomationRule(
            self.id,
            trigger,
            Conditions(c.minScore, c.minVelocity, tuple(c.stages) if c.stages else None),
        )


def new_automation_id() -> str:
    return "aut_" + secrets.token_hex(8)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(24)


def destination_of(action: WebhookAction | SlackAction | EmailAction) -> str:
    """What a circuit breaker and a concurrency limit are kept per: the receiving host."""
    if isinstance(action, WebhookAction):
        url = URL(action.url)
        return f"{url.scheme}://{url.host}:{url.port}"
    if isinstance(action, SlackAction):
        url = URL(action.webhookUrl)
        return f"{url.scheme}://{url.host}:{url.port}"
    return "smtp"


def shown(rule: AutomationModel) -> dict[str, Any]:
    """A rule as the API lists it: secrets masked (the last 4 characters help tell them apart)."""
    out = rule.model_dump(mode="json")
    action = out["action"]
    if action["type"] == "webhook" and action.get("secret"):
        action["secret"] = "…" + action["secret"][-4:]
    elif action["type"] == "slack":
        url = URL(action["webhookUrl"])
        action["webhookUrl"] = f"{url.scheme}://{url.host}/…" + action["webhookUrl"][-4:]
    return out
