"""Identity resolution, the pure part (SPEC 5): emails, traits, and absorbing another lead.

The protocol around it (agents.identity, agents.scoring) is message-based: a lead claims an
email, the owner of the email's partition decides, and a merge moves the absorbed lead's events
to the owner, where `absorb_events` inserts them in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from core.config import ScoringConfig
from core.lead import Applied, EventFact, LeadSummary, NewEvent, rechain

__all__ = [
    "MAX_ANONYMOUS_IDS",
    "AbsorbedEvent",
    "Promotion",
    "absorb_events",
    "claims",
    "fill_traits",
    "merged_by_anonymous_id",
    "normalize_email",
    "note_anonymous_id",
    "promotion",
    "superseded",
    "with_aliases",
]

MAX_ANONYMOUS_IDS = 50
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")


def normalize_email(raw: Any) -> str | None:
    """`properties.email` trimmed and lowercased, or None when it is not a plausible address."""
    if not isinstance(raw, str):
        return None
    email = raw.strip().lower()
    return email if len(email) <= 254 and _EMAIL.match(email) else None


def _trait(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def fill_traits(
    summary: LeadSummary,
    *,
    email: str | None = None,
    name: Any = None,
    company: Any = None,
    overwrite: bool = False,
) -> LeadSummary:
    """Set traits; the lead's own values win unless `overwrite` (a promotion sets its own)."""

    def pick(current: str | None, new: Any) -> str | None:
        candidate = _trait(new)
        if overwrite:
            return candidate if candidate is not None else current
        return current if current is not None else candidate

    return replace(
        summary,
        email=summary.email if summary.email is not None else email,
        name=pick(summary.name, name),
        company=pick(summary.company, company),
    )


def note_anonymous_id(summary: LeadSummary, anonymous_id: str | None) -> LeadSummary:
    """Remember the anonymousIds a lead was seen with (they become aliases when it is merged)."""
    if (
        anonymous_id is None
        or anonymous_id == summary.lead_id
        or anonymous_id in summary.anonymous_ids
        or len(summary.anonymous_ids) >= MAX_ANONYMOUS_IDS
    ):
        return summary
    return replace(summary, anonymous_ids=(*summary.anonymous_ids, anonymous_id))


def claims(lead: LeadSummary, identify: tuple[int, str]) -> bool:
    """Whether an identify with a valid email, logged at `identify` = (timestamp, eventId),
    sends a claim for `lead`.

    A lead has at most one claim pending, and its first identify in the log decides it: an
    unidentified lead with no claim pending claims; one whose pending claim is of a *later*
    identify (an earlier one reached it late, forwarded from another partition) claims again,
    and the earlier claim replaces the pending one — the superseded claim's reply is then
    released or ignored (`promotion`, `superseded`). Later identifies do nothing: whatever the
    pending reply, the lead ends identified or merged, and SPEC 5 gives them no effect either.
    """
    if lead.email is not None:
        return False
    if lead.pending_email is None:
        return True
    return lead.pending_claim is not None and identify < lead.pending_claim


def superseded(lead: LeadSummary, claim: tuple[int, str] | None) -> bool:
    """Whether a `merge` reply to `claim` is for a claim the lead no longer waits for (an
    earlier identify's claim replaced it): the pending claim decides the lead, not this one."""
    return (
        lead.email is None
        and lead.pending_claim is not None
        and claim is not None
        and claim != lead.pending_claim
    )


class Promotion(Enum):
    """What a lead does with a `promote` reply (see `promotion`)."""

    APPLY = "apply"  # the reply to the lead's pending claim: it now owns the email
    AGAIN = "again"  # the reply that already made it the owner (redone after a crash)
    RELEASE = "release"  # not (or no longer) the lead's claim: give the email back


def promotion(lead: LeadSummary | None, email: str, claim: tuple[int, str]) -> Promotion:
    """A promote for `claim` = (timestamp, eventId) of an identify claiming `email`.

    Only the reply to the claim the lead has pending promotes it: a lead owns at most one email,
    decided by its own first claim. Any other promote — the lead was merged away meanwhile
    (`lead` None: it is an alias now), owns another email, or the reply is a copy redone after
    a rebalance for a claim the lead no longer waits for — is answered with a release, so that
    the identity table never names as owner a lead that does not hold the email, and no lead
    ever takes an email from a reply that was not its own. Which of these holds depends only on
    the lead's state, which depends only on its log, so redoing it anywhere decides the same.
    """
    if lead is None:
        return Promotion.RELEASE
    if lead.email == email and lead.email_claim == claim:
        return Promotion.AGAIN
    if lead.email is None and lead.pending_email == email and lead.pending_claim in (None, claim):
        return Promotion.APPLY  # (None: a claim pending since before claims were recorded)
    return Promotion.RELEASE


def merged_by_anonymous_id(lead: LeadSummary, cause: tuple[int, str] | None) -> bool:
    """Whether `lead`, an anonymousId of a lead that was merged by the identify `cause`, is
    merged along with it (SPEC 5: "L's anonymousIds become aliases of K").

    Not if it is identified (never merged away), nor if its own claim pending is of an identify
    earlier in the log than `cause`: that claim decides the lead first (it is promoted and then
    never merged away, or merged into the email's owner), as it would have been in log order.
    """
    if lead.email is not None:
        return False
    pending = lead.pending_claim
    return pending is None or (cause is not None and cause < pending)


def with_aliases(summary: LeadSummary, keys: Iterable[str]) -> LeadSummary:
    """Add alias keys; kept sorted, so the list does not depend on the order of merges."""
    merged = set(summary.aliases) | {k for k in keys if k != summary.lead_id}
    return replace(summary, aliases=tuple(sorted(merged)))


@dataclass(frozen=True, slots=True)
class AbsorbedEvent:
    """An event moving from an absorbed lead, with its points as they were scored."""

    event: NewEvent
    properties: Mapping[str, Any] | None


def absorb_events(
    summary: LeadSummary,
    incoming: Sequence[AbsorbedEvent],
    config: ScoringConfig,
    *,
    predecessor: EventFact | None,
    successors: Iterable[EventFact],
) -> Applied:
    """Insert distinct, not-yet-known events in one pass: O(new + facts after the earliest).

    `predecessor` is the fact before the earliest incoming event and `successors` every fact
    after it; the chain is recomputed from there, as if the events had always been this lead's.
    """
    if not incoming:
        return Applied(summary, [], [])
    new_ids = {a.event.event_id for a in incoming}
    props = {a.event.event_id: a.properties for a in incoming}
    chain: list[NewEvent] = [a.event for a in incoming]
    chain += [NewEvent(f.timestamp, f.event_id, f.event_type, f.points) for f in successors]
    chain.sort(key=lambda e: e.order)
    facts, plain_rows = rechain(chain, config, predecessor)
    rows = [
        replace(row, properties=props[row.event_id] or {}) if row.event_id in new_ids else row
        for row in plain_rows
    ]
    last = facts[-1]
    first = min(incoming, key=lambda a: a.event.order).event.timestamp
    known_first = summary.first_timestamp
    new_summary = replace(
        summary,
        score=last.score_after,
        last_timestamp=last.timestamp,
        last_event_id=last.event_id,
        first_timestamp=first if known_first is None else min(known_first, first),
        event_count=summary.event_count + len(incoming),
        version=summary.version + 1,
    )
    return Applied(new_summary, facts, rows)
