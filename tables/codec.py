"""Byte layouts of the table keys and values.

Keys of the per-event tables start with the lead's table key, length-prefixed so that no lead key
can be a prefix of another; fact keys then carry the timestamp (big-endian, sign-shifted) and the
eventId, so RocksDB's byte order *is* the (timestamp, eventId) order of SPEC 3 and a late event
or a velocity window is one range scan.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.lead import EventFact, LeadSummary

__all__ = [
    "Alias",
    "decode_fact",
    "decode_lead",
    "encode_alias",
    "encode_fact",
    "encode_summary",
    "event_id_key",
    "fact_key",
    "lead_prefix",
]

_SIGN_SHIFT = 1 << 63
_SUMMARY = 1
_ALIAS = 2


def lead_prefix(table_key: bytes) -> bytes:
    return len(table_key).to_bytes(2, "big") + table_key


def fact_key(table_key: bytes, timestamp: int, event_id: str) -> bytes:
    return lead_prefix(table_key) + (timestamp + _SIGN_SHIFT).to_bytes(8, "big") + event_id.encode()


def fact_order_from_key(key: bytes, prefix_len: int) -> tuple[int, str]:
    ts = int.from_bytes(key[prefix_len : prefix_len + 8], "big") - _SIGN_SHIFT
    return ts, key[prefix_len + 8 :].decode()


def encode_fact(fact: EventFact) -> bytes:
    return orjson.dumps([fact.event_type, fact.points, fact.score_after])


def decode_fact(key: bytes, value: bytes, prefix_len: int) -> EventFact:
    ts, event_id = fact_order_from_key(key, prefix_len)
    event_type, points, score_after = orjson.loads(value)
    return EventFact(ts, event_id, event_type, points, float(score_after))


def event_id_key(table_key: bytes, event_id: str) -> bytes:
    return lead_prefix(table_key) + event_id.encode()


Source = tuple[int, int]  # (0 = events / 1 = lead-commands, offset) of the record that wrote it


def encode_event_record(timestamp: int, properties: Any, source: Source | None) -> bytes:
    """The dedup entry: when the event happened, its properties, and the record that added it
    (written once; a record reprocessed after a crash recognises its own entries)."""
    return orjson.dumps([timestamp, properties, list(source) if source else None])


def decode_event_record(value: bytes) -> tuple[int, Any, Source | None]:
    ts, properties, source = orjson.loads(value)
    return int(ts), properties, (int(source[0]), int(source[1])) if source else None


class Alias:
    """A key merged into another lead: events sent with it count for `canonical`."""

    __slots__ = ("applied", "canonical", "version")

    def __init__(
        self, canonical: str, applied: tuple[int, int] = (-1, -1), version: int = 0
    ) -> None:
        self.canonical = canonical
        self.applied = applied
        self.version = version  # of the merged lead's tombstone

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alias) and (other.canonical, other.applied) == (
            self.canonical,
            self.applied,
        )

    def __repr__(self) -> str:
        return f"Alias({self.canonical!r})"


def encode_summary(s: LeadSummary) -> bytes:
    return orjson.dumps(
        [
            _SUMMARY,
            s.project_id,
            s.lead_id,
            s.score,
            s.last_timestamp,
            s.last_event_id,
            s.first_timestamp,
            s.event_count,
            s.version,
            s.email,
            s.name,
            s.company,
            list(s.aliases),
            s.pending_email,
            list(s.anonymous_ids),
            list(s.email_claim) if s.email_claim else None,
            list(s.applied),
            list(s.pending_claim) if s.pending_claim else None,
        ]
    )


def encode_alias(alias: Alias) -> bytes:
    return orjson.dumps([_ALIAS, alias.canonical, list(alias.applied), alias.version])


def decode_lead(value: bytes) -> LeadSummary | Alias:
    data = orjson.loads(value)
    if data[0] == _ALIAS:
        return Alias(data[1], (int(data[2][0]), int(data[2][1])), int(data[3]))
    (
        _,
        pid,
        lead_id,
        score,
        last_ts,
        last_eid,
        first_ts,
        count,
        version,
        email,
        name,
        company,
        aliases,
        pending_email,
        anonymous_ids,
        email_claim,
        applied,
        *rest,  # pending_claim: absent from summaries written before it existed
    ) = data
    pending_claim = rest[0] if rest else None
    return LeadSummary(
        project_id=pid,
        lead_id=lead_id,
        score=float(score),
        last_timestamp=last_ts,
        last_event_id=last_eid,
        first_timestamp=first_ts,
        event_count=count,
        version=version,
        email=email,
        name=name,
        company=company,
        aliases=tuple(aliases),
        pending_email=pending_email,
        anonymous_ids=tuple(anonymous_ids),
        email_claim=(int(email_claim[0]), email_claim[1]) if email_claim else None,
        applied=(int(applied[0]), int(applied[1])),
        pending_claim=(int(pending_claim[0]), pending_claim[1]) if pending_claim else None,
    )
