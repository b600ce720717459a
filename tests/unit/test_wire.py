"""`app.wire`: every record round-trips through its one encoder and decoder, reads what is on the
topics today, and a malformed record is refused with the field named."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest
from msgspec import Raw

from app import wire
from app.metrics import dead_letter_class
from app.records import lead_change, lead_changes, lead_erasure, lead_removal
from core.lead import HistoryRow, LeadSummary, LeadView

EPOCH = 3

COMMANDS: list[wire.LeadCommand] = [
    wire.EventCommand(event=Raw(b'{"projectId":"p","eventId":"e"}'), logged_at=5, epoch=EPOCH),
    wire.Promote(
        project_id="p", email="a@b.io", event_id="e1", timestamp=7, name="Ann", epoch=EPOCH
    ),
    wire.Merge(
        project_id="p", into="crm-1", email="a@b.io", timestamp=7, event_id="e1", epoch=EPOCH
    ),
    wire.Merge(project_id="p", into="crm-1", epoch=EPOCH),
    wire.Absorb(
        project_id="p",
        from_="anon-1",
        events=(wire.AbsorbedEventRecord(1, "e1", "page_view", 5, {"url": "/x"}),),
        epoch=EPOCH,
    ),
    wire.Absorb(
        project_id="p",
        from_="anon-1",
        events=(wire.AbsorbedEventRecord(1, "e1", "page_view", 5, None),),
        aliases=("anon-1", "anon-2"),
        name="Ann",
        company=None,
        epoch=EPOCH,
    ),
    wire.Rebuild(project_id="p", rescore=True, epoch=EPOCH),
    wire.RescoreProject(project_id="p", epoch=EPOCH),
    wire.Erase(project_id="p", erased_at=9, by={"user": "x"}, origin="cascade", epoch=EPOCH),
]
CLAIMS: list[wire.ClaimRecord] = [
    wire.Claim(
        project_id="p", email="a@b.io", claimant="l1", event_id="e1", timestamp=7, epoch=EPOCH
    ),
    wire.Confirm(project_id="p", email="a@b.io", lead="l1", event_id="e1", epoch=EPOCH),
    wire.Release(project_id="p", email="a@b.io", lead="l1", event_id="e1", epoch=EPOCH),
]


def _same(a: Any, b: Any) -> bool:
    # a Raw field compares by identity: compare the records' wire bytes and types
    return type(a) is type(b) and wire.encode(a) == wire.encode(b)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: wire.LeadCommand) -> None:
    assert _same(wire.decode_command(wire.encode(command), EPOCH), command)


@pytest.mark.parametrize("record", CLAIMS, ids=lambda c: type(c).__name__)
def test_every_identity_record_round_trips(record: wire.ClaimRecord) -> None:
    assert wire.decode_claim(wire.encode(record), EPOCH) == record


def _view() -> LeadView:
    summary = LeadSummary(
        "p",
        "crm-1",
        aliases=("anon-1",),
        email="a@b.io",
        name="Ann",
        event_count=2,
        score=12.5,
        first_timestamp=1_700_000_000_000_000,
        last_timestamp=1_700_000_000_500_000,
        email_claim=(1_700_000_000_000_000, "e1"),
        version=2,
    )
    return LeadView(summary, 11.0, "cold", 2, 10, 1_700_000_001_000_000)


ROWS = [
    HistoryRow("e1", "identify", 1_700_000_000_000_000, 5, 0.0, 5.0, {"email": "a@b.io"}),
    HistoryRow("e2", "page_view", 1_700_000_000_500_000, 7, 5.0, 12.5),  # rescored: no props
]


def test_every_lead_change_round_trips() -> None:
    encoded = [
        lead_change("upsert", _view(), ROWS, epoch=EPOCH),
        lead_change("refresh", _view(), epoch=EPOCH),
        lead_removal("p", "anon-1", "crm-1", 1_700_000_001_000_000, epoch=EPOCH),
        lead_erasure("p", "anon-1", epoch=EPOCH),
    ]
    for value in encoded:
        change = wire.decode_lead_change(value)
        assert wire.encode(change) == value
    upsert = wire.decode_lead_change(encoded[0])
    assert isinstance(upsert, wire.UpsertChange)
    assert upsert.lead.events_last_24h == 2 and upsert.lead.email_claim == (
        1_700_000_000_000_000,
        "e1",
    )
    assert upsert.history[1].properties is msgspec.UNSET  # a rescored row carries none


def test_a_split_lead_change_decodes_part_by_part() -> None:
    parts = lead_changes("upsert", _view(), ROWS * 50, epoch=EPOCH, max_bytes=2_000)
    assert len(parts) > 1
    rows = [row for part in parts for row in wire.decode_lead_change(part).history]
    assert len(rows) == 100


# -- what is on the topics today (written by the code before app.wire) ---------------------------
OLD_LEAD_CHANGE = {
    "schema": 1,
    "kind": "upsert",
    "lead": {
        "projectId": "p",
        "leadId": "crm-1",
        "aliases": ["anon-1"],
        "email": "a@b.io",
        "name": "Ann",
        "company": None,
        "currentScore": 11.0,
        "leadStage": "cold",
        "velocityScore": 10,
        "eventsLast24h": 2,
        "eventCount": 2,
        "firstEventAt": "2023-11-14T22:13:20Z",
        "lastEventAt": "2023-11-14T22:13:20.500000Z",
        "scoreAtLastEvent": 12.5,
        "emailClaim": [1_700_000_000_000_000, "e1"],
        "version": (EPOCH << 40) | 2,
        "computedAt": "2023-11-14T22:13:21Z",
    },
    "history": [
        {
            "eventId": "e1",
            "eventType": "identify",
            "timestamp": "2023-11-14T22:13:20Z",
            "timestampUs": 1_700_000_000_000_000,
            "points": 5,
            "scoreBefore": 0.0,
            "scoreAfter": 5.0,
            "properties": {"email": "a@b.io"},
        }
    ],
}


def test_lead_changes_written_before_reach_the_sink_unchanged() -> None:
    decoded = wire.decode_lead_change(orjson.dumps(OLD_LEAD_CHANGE))
    # (as the sink's planner reads it; tuples are arrays to MongoDB as lists are)
    assert orjson.loads(orjson.dumps(msgspec.to_builtins(decoded))) == OLD_LEAD_CHANGE
    # and what is written now is what was written then (same fields, same values)
    now = orjson.loads(lead_change("upsert", _view(), ROWS[:1], epoch=EPOCH))
    assert now == OLD_LEAD_CHANGE


def test_commands_and_claims_written_before_decode() -> None:
    old_absorb = {
        "command": "absorb",
        "projectId": "p",
        "from": "anon-1",
        "events": [[1, "e1", "page_view", 5, {"url": "/x"}]],
        "epoch": EPOCH,
    }
    absorb = wire.decode_command(orjson.dumps(old_absorb), EPOCH)
    assert isinstance(absorb, wire.Absorb) and absorb.aliases is msgspec.UNSET
    assert absorb.events[0].properties == {"url": "/x"} and absorb.v == 1
    old_release = {
        "release": True,
        "projectId": "p",
        "email": "a@b.io",
        "lead": "l1",
        "eventId": "e1",
        "epoch": EPOCH,
    }
    assert wire.decode_claim(orjson.dumps(old_release), EPOCH) == CLAIMS[2]
    old_claim = {
        "projectId": "p",
        "email": "a@b.io",
        "claimant": "l1",
        "eventId": "e1",
        "timestamp": 7,
        "name": None,
        "company": None,
        "epoch": EPOCH,
    }
    assert wire.decode_claim(orjson.dumps(old_claim), EPOCH) == CLAIMS[0]


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": "promote", "projectId": "p", "email": "e", "eventId": "x"}, "timestamp"),
        (
            {
                "command": "promote",
                "projectId": "p",
                "email": "e",
                "eventId": "x",
                "timestamp": "1",
            },
            "$.timestamp",
        ),
        ({"command": "nope", "projectId": "p"}, "$.command"),
        ({"projectId": "p"}, "command"),
        ({"command": "merge", "projectId": 1, "into": "x"}, "$.projectId"),
        ({"command": "absorb", "projectId": "p", "from": "x", "events": [[1, "e"]]}, "$.events[0]"),
        ({"command": "erase", "projectId": "p", "erasedAt": 1, "origin": "x"}, "$.origin"),
        ({"command": "rebuild", "projectId": "p", "v": 2}, "$.v"),
    ],
)
def test_a_malformed_command_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(wire.WireError, match="invalid lead command") as refused:
        wire.decode_command(orjson.dumps({**body, "epoch": EPOCH}), EPOCH)
    assert field in str(refused.value)


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]", b"7", None])
def test_what_is_no_command_at_all_is_refused(value: bytes | None) -> None:
    with pytest.raises(wire.WireError, match="invalid lead command"):
        wire.decode_command(value, EPOCH)


def test_records_of_another_epoch_are_ignored_even_when_malformed() -> None:
    assert wire.decode_command(wire.encode(COMMANDS[1]), EPOCH + 1) is None
    assert wire.decode_command(orjson.dumps({"command": "nope", "epoch": 1}), EPOCH) is None
    assert wire.decode_command(b"{}", EPOCH) is None  # no epoch at all: not this epoch's
    assert wire.decode_claim(orjson.dumps({"claimant": 1, "epoch": 1}), EPOCH) is None
    assert wire.decode_claim(wire.encode(CLAIMS[0]), EPOCH + 1) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"projectId": "p", "email": "e", "eventId": "x", "timestamp": 1}, "claimant"),
        ({"confirm": True, "projectId": "p", "email": "e", "eventId": "x"}, "lead"),
        ({"release": True, "projectId": "p", "email": 5, "lead": "l", "eventId": "x"}, "$.email"),
        ({"release": "yes", "projectId": "p"}, "$.release"),
        ({"release": True, "confirm": True, "projectId": "p"}, "$.release"),
    ],
)
def test_a_malformed_identity_record_is_refused_naming_the_field(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(wire.WireError, match="invalid identity record") as refused:
        wire.decode_claim(orjson.dumps({**body, "epoch": EPOCH}), EPOCH)
    assert field in str(refused.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({**OLD_LEAD_CHANGE, "kind": "upsertt"}, "$.kind"),
        ({**OLD_LEAD_CHANGE, "schema": 2}, "$.schema"),
        (
            {**OLD_LEAD_CHANGE, "lead": {**OLD_LEAD_CHANGE["lead"], "version": "1"}},
            "$.lead.version",
        ),
        ({**OLD_LEAD_CHANGE, "lead": {"projectId": "p", "leadId": "l"}}, "$.lead"),
        ({**OLD_LEAD_CHANGE, "history": [{"eventId": "e"}]}, "$.history[0]"),
    ],
)
def test_a_malformed_lead_change_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(wire.WireError, match="not a lead change") as refused:
        wire.decode_lead_change(orjson.dumps(change))
    assert field in str(refused.value)


def test_refusals_are_counted_under_their_own_reason_class() -> None:
    refusals = [
        (lambda: wire.decode_command(b"[]", EPOCH), "invalid lead command"),
        (lambda: wire.decode_claim(b"[]", EPOCH), "invalid identity record"),
        (lambda: wire.decode_lead_change(b"[]"), "not a lead change"),
    ]
    for decode, reason_class in refusals:
        with pytest.raises(wire.WireError) as refused:
            decode()
        assert dead_letter_class(str(refused.value)) == reason_class
