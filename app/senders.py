"""One delivery attempt to one destination: a signed webhook, a Slack incoming webhook, or an
e-mail over SMTP (SPEC 9). Each answers an `Outcome`: delivered, retryable or failed for good.

HTTP is aiohttp (the web stack the workers already run on); SMTP is aiosmtplib (asyncio-native,
so a slow mail server never blocks the loop). Retries and scheduling are not done here: they are
kept in MongoDB by app.delivery so they outlive restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import aiosmtplib
import orjson

from app.automations import EmailAction, SlackAction, WebhookAction
from app.settings import Settings
from core.automation import retryable_status

__all__ = ["Outcome", "Senders", "sign", "slack_message", "webhook_payload"]

_BODY_KEPT = 500  # characters of a receiver's answer kept with an attempt


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    retry: bool  # a temporary failure: try again later
    status: int | None = None  # HTTP status, or the SMTP reply code
    error: str | None = None
    body: str | None = None
    retry_after: float | None = None  # seconds, from the receiver
    duration_ms: float = 0.0

    def as_attempt(self, at: datetime) -> dict[str, Any]:
        return {
            "at": at,
            "status": self.status,
            "delivered": self.delivered,
            "error": self.error,
            "durationMs": round(self.duration_ms, 1),
            "response": self.body,
        }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`X-Leadscore-Signature`: `t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{raw body}"}`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_payload(firing: dict[str, Any]) -> dict[str, Any]:
    """The SPEC 9 body of a firing, from its MongoDB document."""
    fired_at = firing["firedAt"]
    if isinstance(fired_at, datetime):
        fired_at = fired_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": firing["_id"],
        "type": "automation.fired",
        "projectId": firing["projectId"],
        "rule": {"id": firing["ruleId"], "name": firing.get("ruleName")},
        "trigger": firing.get("trigger"),
        "lead": firing.get("lead"),
        "event": firing.get("event"),
        "firedAt": fired_at,
    }


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: `text` for notifications, `blocks` for the channel."""
    lead = payload.get("lead") or {}
    who = lead.get("email") or lead.get("leadId")
    text = (
        f"{payload['rule']['name']}: lead {who} is {lead.get('leadStage')} "
        f"(score {lead.get('currentScore')})"
    )
    fields = [
        {"type": "mrkdwn", "text": f"*Lead*\n{who}"},
        {"type": "mrkdwn", "text": f"*Stage*\n{lead.get('leadStage')}"},
        {"type": "mrkdwn", "text": f"*Score*\n{lead.get('currentScore')}"},
        {"type": "mrkdwn", "text": f"*Velocity*\n{lead.get('velocityScore')}"},
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "fields": fields},
        ],
    }


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Senders:
    """Holds the HTTP session (one connection pool per process)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.delivery_timeout),
                # keep-alive connections, at most as many as the delivery slots (per host and
                # in total), so a burst reuses sockets instead of opening one per firing
                connector=aiohttp.TCPConnector(
                    limit=self._settings.delivery_concurrency,
                    limit_per_host=self._settings.delivery_per_destination,
                ),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(
        self,
        action: WebhookAction | SlackAction | EmailAction,
        payload: dict[str, Any],
    ) -> Outcome:
        if isinstance(action, WebhookAction):
            body = orjson.dumps(payload)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "leadscore-automation/1",
                "X-Leadscore-Delivery": str(payload["id"]),
            }
            if action.secret:
                headers["X-Leadscore-Signature"] = sign(action.secret, int(time.time()), body)
            return await self._post(action.url, body, headers)
        if isinstance(action, SlackAction):
            body = orjson.dumps(slack_message(payload))
            return await self._post(action.webhookUrl, body, {"Content-Type": "application/json"})
        return await self._mail(action, payload)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        started = time.perf_counter()
        try:
            async with self.http.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = (await resp.text(errors="replace"))[:_BODY_KEPT]
                ms = (time.perf_counter() - started) * 1000
                if 200 <= resp.status < 300:
                    return Outcome(True, False, resp.status, None, text, duration_ms=ms)
                return Outcome(
                    False,
                    retryable_status(resp.status),
                    resp.status,
                    f"HTTP {resp.status}",
                    text,
                    _retry_after(resp.headers.get("Retry-After")),
                    ms,
                )
        except TimeoutError:
            ms = (time.perf_counter() - started) * 1000
            return Outcome(False, True, None, "timeout", duration_ms=ms)
        except (aiohttp.ClientError, OSError) as exc:
            ms = (time.perf_counter() - started) * 1000
            return Outcome(False, True, None, f"network error: {exc!r}"[:300], duration_ms=ms)

    async def _mail(self, action: EmailAction, payload: dict[str, Any]) -> Outcome:
        s = self._settings
        if not s.smtp_host:
            return Outcome(False, False, None, "no SMTP server configured (SMTP_HOST)")
        message = EmailMessage()
        message["From"] = s.smtp_from
        message["To"] = ", ".join(action.to)
        message["Subject"] = action.subject
        message["X-Leadscore-Delivery"] = str(payload["id"])
        message.set_content(
            slack_message(payload)["text"] + "\n\n" + orjson.dumps(payload).decode()
        )
        started = time.perf_counter()
        try:
            errors, reply = await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_user or None,
                password=s.smtp_password or None,
                use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls",
                timeout=s.delivery_timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            ms = (time.perf_counter() - started) * 1000
            return Outcome(False, False, 550, f"recipients refused: {exc}"[:300], duration_ms=ms)
        except aiosmtplib.SMTPResponseException as exc:
            ms = (time.perf_counter() - started) * 1000
            # 4xx replies are temporary by SMTP's own definition, 5xx permanent
            return Outcome(False, 400 <= exc.code < 500, exc.code, exc.message, duration_ms=ms)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            ms = (time.perf_counter() - started) * 1000
            return Outcome(False, True, None, f"SMTP error: {exc!r}"[:300], duration_ms=ms)
        ms = (time.perf_counter() - started) * 1000
        if errors:  # some recipients refused
            return Outcome(False, False, 550, f"recipients refused: {sorted(errors)}", reply)
        return Outcome(True, False, 250, None, reply[:_BODY_KEPT], duration_ms=ms)
