"""SPEC 5, the pure part (core.identity): emails, traits, and absorbing a merged lead's events.

`absorb_into` plays the `absorb` command of agents.lead_commands on a `MemoryLead`: it drops the
incoming events whose eventId the absorbing lead already has (the absorbing lead's copy wins) or
that repeat within the batch, then hands `absorb_events` the predecessor of the earliest new event
and every fact from it on, exactly as the RocksDB store does. Everything is compared, bit for bit,
with `core.lead.score_events` over the union.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import DEFAULT_RULES, Rule, ScoringConfig, default_config
from core.identity import (
    AbsorbedEvent,
    Promotion,
    absorb_events,
    claims,
    fill_traits,
    merged_by_anonymous_id,
    normalize_email,
    promotion,
    superseded,
)
from core.lead import Applied, LeadSummary, NewEvent, score_events, summary_from_facts
from core.timeutil import US_PER_DAY, US_PER_HOUR, parse_timestamp
from tables.codec import decode_lead, encode_summary
from tests.unit.core_support import MemoryLead, chain_fields

BASE = parse_timestamp("2026-01-01T00:00:00Z")
RULES = dict(DEFAULT_RULES) | {"paused_rule": Rule(40, active=False)}
TYPES = [*RULES, "feature_used", "identify"]
PROPERTY = settings(max_examples=150, deadline=None)

configs = st.builds(
    ScoringConfig,
    rules=st.just(RULES),
    grace_days=st.sampled_from([7, 7, 0, 3]),
    daily_rate=st.sampled_from([0.05, 0.05, 0.3, 1.0]),
)
timestamps = st.one_of(
    st.integers(0, 60 * 24).map(lambda h: BASE + h * US_PER_HOUR),  # ties and exact days
    st.integers(0, 60 * US_PER_DAY).map(lambda us: BASE + us),
)
event_ids = st.text(alphabet="abcdefgh", min_size=1, max_size=2)  # small: collisions are common


@st.composite
def events(draw: st.DrawFn, config: ScoringConfig) -> NewEvent:
    event_type = draw(st.sampled_from(TYPES))
    return NewEvent(draw(timestamps), draw(event_ids), event_type, config.points_for(event_type))


def lead_of(lead_id: str, config: ScoringConfig, log: Iterable[NewEvent]) -> MemoryLead:
    """A lead fed its own log one event at a time (first occurrence of an eventId wins)."""
    lead = MemoryLead(config=config, summary=LeadSummary("prj_test", lead_id))
    lead.add_all(log)
    return lead


def absorb_into(owner: MemoryLead, incoming: Iterable[NewEvent]) -> Applied | None:
    """The `absorb` command on a MemoryLead; None when nothing new arrives (nothing changes)."""
    fresh: dict[str, AbsorbedEvent] = {}
    for event in incoming:
        if event.event_id not in owner.seen and event.event_id not in fresh:
            fresh[event.event_id] = AbsorbedEvent(event, {"from": "absorbed"})
    if not fresh:
        return None
    earliest = min(a.event.order for a in fresh.values())
    at = bisect_left([fact.order for fact in owner.facts], earliest)
    applied = absorb_events(
        owner.summary,
        list(fresh.values()),
        owner.config,
        predecessor=owner.facts[at - 1] if at else None,
        successors=list(owner.facts[at:]),
    )
    owner.seen.update((eid, a.event) for eid, a in fresh.items())
    owner._store(applied)
    return applied


def union(owner_log: Iterable[NewEvent], absorbed_log: Iterable[NewEvent]) -> list[NewEvent]:
    """The distinct events of the merged lead: the owner's first, so its copies win."""
    distinct: dict[str, NewEvent] = {}
    for event in [*owner_log, *absorbed_log]:
        distinct.setdefault(event.event_id, event)
    return list(distinct.values())


def chain_state(lead: MemoryLead) -> tuple[object, ...]:
    s = lead.summary
    return (
        s.score.hex(),
        s.event_count,
        s.first_timestamp,
        s.last_timestamp,
        s.last_event_id,
        [chain_fields(r) for r in lead.rows()],
        lead.facts,
    )


def assert_equals_reference(lead: MemoryLead, distinct: list[NewEvent]) -> None:
    facts, rows = score_events(distinct, lead.config)
    assert [chain_fields(r) for r in lead.rows()] == [chain_fields(r) for r in rows]
    assert lead.facts == facts
    expected = summary_from_facts(lead.summary, facts)
    got = lead.summary
    assert (got.score.hex(), got.event_count, got.first_timestamp) == (
        expected.score.hex(),
        expected.event_count,
        expected.first_timestamp,
    )
    assert (got.last_timestamp, got.last_event_id) == (
        expected.last_timestamp,
        expected.last_event_id,
    )


# -- normalize_email ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dana@example.com", "dana@example.com"),
        ("Dana@Example.COM", "dana@example.com"),
        ("  Dana@Example.com \t\n", "dana@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_spec5_email_is_trimmed_and_lowercased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        42,
        ["a@b.co"],
        {"email": "a@b.co"},
        "",
        "   ",
        "dana",
        "dana@",
        "@example.com",
        "dana@example",  # no dot in the domain
        "dana@@example.com",
        "da@na@example.com",
        "da na@example.com",
        "dana@exa mple.com",
        "a" * 65 + "@example.com",  # local part over 64
        "a@" + "b" * 250 + ".com",  # over 254 in all
    ],
)
def test_spec5_invalid_email_is_none(raw: object) -> None:
    assert normalize_email(raw) is None


_LOCAL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-",
    min_size=1,
    max_size=20,
)
_LABEL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
    min_size=1,
    max_size=12,
)
_PAD = st.text(alphabet=" \t\n\r", max_size=3)


@PROPERTY
@given(_LOCAL, st.lists(_LABEL, min_size=2, max_size=4), _PAD, _PAD)
def test_property_valid_email_normalizes_to_its_trimmed_lowercase_and_is_stable(
    local: str, labels: list[str], left: str, right: str
) -> None:
    address = f"{local}@{'.'.join(labels)}"
    got = normalize_email(f"{left}{address}{right}")
    assert got == address.lower()
    assert normalize_email(got) == got  # idempotent
    assert normalize_email(address.upper()) == got  # case never matters


@PROPERTY
@given(st.text(max_size=40))
def test_property_normalized_email_is_trimmed_lowercase_or_none(raw: str) -> None:
    got = normalize_email(raw)
    if got is not None:
        assert got == raw.strip().lower()
        assert got.count("@") == 1 and not any(c.isspace() for c in got)
        assert normalize_email(got) == got


# -- absorb_events ---------------------------------------------------------------------------


@PROPERTY
@given(configs, st.data())
def test_property_absorb_equals_score_events_over_the_union(
    config: ScoringConfig, data: st.DataObject
) -> None:
    owner_log = data.draw(st.lists(events(config), max_size=15))
    absorbed_log = data.draw(st.lists(events(config), max_size=15))
    owner = lead_of("K", config, owner_log)
    absorbed = lead_of("L", config, absorbed_log)

    absorb_into(owner, absorbed.seen.values())

    distinct = union(owner.seen.values(), absorbed.seen.values())
    assert_equals_reference(owner, distinct)
    assert owner.summary.event_count == len(distinct)


@PROPERTY
@given(configs, st.data())
def test_property_absorbing_at_once_equals_inserting_one_by_one_in_any_order(
    config: ScoringConfig, data: st.DataObject
) -> None:
    owner_log = data.draw(st.lists(events(config), max_size=15))
    absorbed_log = data.draw(st.lists(events(config), max_size=15))
    at_once = lead_of("K", config, owner_log)
    one_by_one = lead_of("K", config, owner_log)
    moved = list(lead_of("L", config, absorbed_log).seen.values())

    absorb_into(at_once, data.draw(st.permutations(moved)))
    for event in data.draw(st.permutations(moved)):
        one_by_one.add(event)

    assert chain_state(at_once) == chain_state(one_by_one)


@PROPERTY
@given(configs, st.data())
def test_property_absorbing_in_chunks_equals_absorbing_at_once(
    config: ScoringConfig, data: st.DataObject
) -> None:
    """The agent ships a big lead in chunks (by encoded size); chunk boundaries must not matter."""
    owner_log = data.draw(st.lists(events(config), max_size=12))
    moved = list(
        lead_of("L", config, data.draw(st.lists(events(config), max_size=20))).seen.values()
    )
    at_once = lead_of("K", config, owner_log)
    chunked = lead_of("K", config, owner_log)
    absorb_into(at_once, moved)
    size = data.draw(st.integers(1, 5))
    shuffled = data.draw(st.permutations(moved))
    for start in range(0, len(shuffled), size):
        absorb_into(chunked, shuffled[start : start + size])
    assert chain_state(chunked) == chain_state(at_once)


@PROPERTY
@given(configs, st.data())
def test_property_absorbing_the_same_events_again_changes_nothing(
    config: ScoringConfig, data: st.DataObject
) -> None:
    owner = lead_of("K", config, data.draw(st.lists(events(config), max_size=12)))
    moved = list(
        lead_of("L", config, data.draw(st.lists(events(config), max_size=12))).seen.values()
    )
    absorb_into(owner, moved)
    before = (chain_state(owner), owner.summary)

    # a merge processed twice after a crash re-sends everything: all of it is deduplicated
    assert absorb_into(owner, data.draw(st.permutations(moved))) is None
    assert (chain_state(owner), owner.summary) == before

    # and absorb_events itself is a no-op on nothing new
    same = absorb_events(owner.summary, [], config, predecessor=None, successors=owner.facts)
    assert same.summary == owner.summary and same.facts == [] and same.rows == []


@PROPERTY
@given(configs, st.data())
def test_property_duplicate_event_ids_in_both_leads_count_once_owner_copy_wins(
    config: ScoringConfig, data: st.DataObject
) -> None:
    owner_log = data.draw(st.lists(events(config), min_size=1, max_size=12))
    owner = lead_of("K", config, owner_log)
    # the absorbed lead reuses some of the owner's eventIds, with another type and timestamp
    reused = data.draw(st.lists(st.sampled_from(sorted(owner.seen)), min_size=1, max_size=5))
    impostors = [
        NewEvent(
            data.draw(timestamps), eid, "contract_signed", config.points_for("contract_signed")
        )
        for eid in reused
    ]
    own = data.draw(st.lists(events(config), max_size=8))
    absorbed = lead_of("L", config, [*impostors, *own])
    owner_copies = dict(owner.seen)

    absorb_into(owner, absorbed.seen.values())

    distinct = union(owner_copies.values(), absorbed.seen.values())
    assert owner.summary.event_count == len(distinct) == len(owner.rows())
    assert len({r.event_id for r in owner.rows()}) == len(owner.rows())
    for row in owner.rows():
        if row.event_id in owner_copies:
            kept = owner_copies[row.event_id]
            assert (row.timestamp, row.event_type, row.points) == (
                kept.timestamp,
                kept.event_type,
                kept.points,
            )
    assert_equals_reference(owner, distinct)


def test_absorb_into_an_empty_lead_equals_scoring_the_absorbed_events() -> None:
    config = default_config()
    moved = [
        NewEvent(BASE + 3 * US_PER_DAY, "x3", "page_view", 5),
        NewEvent(BASE, "x1", "signup", 30),
        NewEvent(BASE + 20 * US_PER_DAY, "x2", "unsubscribe", -20),
    ]
    owner = MemoryLead(config=config, summary=LeadSummary("prj_test", "K"))
    applied = absorb_into(owner, moved)
    assert applied is not None
    assert_equals_reference(owner, moved)
    # every absorbed row is new and carries its properties; nothing else is emitted
    assert [r.event_id for r in applied.rows] == ["x1", "x3", "x2"]
    assert all(r.properties == {"from": "absorbed"} for r in applied.rows)
    assert applied.summary.version == 1


def test_absorb_rewrites_only_the_rows_from_the_earliest_new_event_on() -> None:
    """Owner rows before the earliest absorbed event stay as they are; later ones are rescored
    (without properties, so the sink keeps the ones written first)."""
    config = default_config()
    owner = lead_of(
        "K",
        config,
        [
            NewEvent(BASE, "k1", "signup", 30),
            NewEvent(BASE + 1 * US_PER_DAY, "k2", "demo_request", 50),
            NewEvent(BASE + 30 * US_PER_DAY, "k3", "page_view", 5),
        ],
    )
    applied = absorb_into(owner, [NewEvent(BASE + 10 * US_PER_DAY, "l1", "download", 15)])
    assert applied is not None
    assert [r.event_id for r in applied.rows] == ["l1", "k3"]
    assert applied.rows[0].properties == {"from": "absorbed"}
    assert applied.rows[1].properties is None
    assert_equals_reference(owner, [*owner.seen.values()])


def test_absorb_keeps_the_owner_traits_and_identity() -> None:
    config = default_config()
    owner = lead_of("K", config, [NewEvent(BASE, "k1", "signup", 30)])
    owner.summary = fill_traits(owner.summary, email="k@example.com", name="Kim", company="Acme")
    absorb_into(owner, [NewEvent(BASE - US_PER_DAY, "l1", "page_view", 5)])
    s = owner.summary
    assert (s.lead_id, s.email, s.name, s.company) == ("K", "k@example.com", "Kim", "Acme")
    assert s.first_timestamp == BASE - US_PER_DAY and s.event_count == 2


# -- fill_traits -----------------------------------------------------------------------------


def _lead(**traits: str | None) -> LeadSummary:
    return LeadSummary("prj_test", "K", **traits)  # type: ignore[arg-type]


def test_spec5_owner_values_win_and_gaps_are_filled() -> None:
    owner = _lead(email="k@example.com", name="Kim", company=None)
    merged = fill_traits(owner, email="l@example.com", name="Lee", company="Globex")
    assert (merged.email, merged.name, merged.company) == ("k@example.com", "Kim", "Globex")


def test_spec5_gaps_are_filled_only_with_real_values() -> None:
    owner = _lead()
    assert fill_traits(owner, name="  ", company=None) == owner
    assert fill_traits(owner, name=42, company=["x"]) == owner  # not strings: ignored
    got = fill_traits(owner, email="l@example.com", name="  Lee ", company="Globex")
    assert (got.email, got.name, got.company) == ("l@example.com", "Lee", "Globex")


def test_spec5_promotion_overwrites_with_the_given_values() -> None:
    owner = _lead(name="Old", company="OldCo")
    promoted = fill_traits(
        owner, email="p@example.com", name="Pat", company="Initech", overwrite=True
    )
    assert (promoted.email, promoted.name, promoted.company) == ("p@example.com", "Pat", "Initech")


def test_spec5_promotion_keeps_values_it_is_not_given() -> None:
    owner = _lead(name="Old", company="OldCo")
    promoted = fill_traits(owner, email="p@example.com", name=None, company=" ", overwrite=True)
    assert (promoted.email, promoted.name, promoted.company) == ("p@example.com", "Old", "OldCo")


def test_spec5_an_owned_email_is_never_replaced() -> None:
    owner = _lead(email="k@example.com")
    assert fill_traits(owner, email="x@example.com").email == "k@example.com"
    assert fill_traits(owner, email="x@example.com", overwrite=True).email == "k@example.com"


_TRAIT = st.one_of(st.none(), st.just(""), st.just("  "), st.text(min_size=1, max_size=8))


@PROPERTY
@given(_TRAIT, _TRAIT, _TRAIT, _TRAIT, st.booleans())
def test_property_fill_traits(
    own_name: str | None,
    own_company: str | None,
    name: str | None,
    company: str | None,
    overwrite: bool,
) -> None:
    def clean(v: str | None) -> str | None:
        return v.strip() if v is not None and v.strip() else None

    # a stored trait is always a clean value or None
    owner = _lead(name=clean(own_name), company=clean(own_company))
    got = fill_traits(owner, name=name, company=company, overwrite=overwrite)
    for mine, given_value, result in (
        (owner.name, name, got.name),
        (owner.company, company, got.company),
    ):
        if overwrite:
            assert result == (clean(given_value) if clean(given_value) is not None else mine)
        else:
            assert result == (mine if mine is not None else clean(given_value))
    # everything but the traits is untouched
    assert (got.score, got.event_count, got.version, got.aliases) == (
        owner.score,
        owner.event_count,
        owner.version,
        owner.aliases,
    )


# -- issue 16: which reply decides a lead -------------------------------------------------------

CLAIM_A = (1_000, "e1")
CLAIM_B = (2_000, "e2")


def _pending(email: str, claim: tuple[int, str] | None) -> LeadSummary:
    return LeadSummary("prj_test", "L", pending_email=email, pending_claim=claim)


def test_promotion_takes_only_the_reply_to_the_pending_claim() -> None:
    lead = _pending("a@x.io", CLAIM_A)
    assert promotion(lead, "a@x.io", CLAIM_A) is Promotion.APPLY
    # a reply for another email, or another claim of the same email: given back
    assert promotion(lead, "b@x.io", CLAIM_B) is Promotion.RELEASE
    assert promotion(lead, "a@x.io", CLAIM_B) is Promotion.RELEASE
    # a summary written before claims were recorded: the pending email is enough
    assert promotion(_pending("a@x.io", None), "a@x.io", CLAIM_A) is Promotion.APPLY


def test_promotion_of_an_owner_is_a_redo_for_its_own_claim_and_a_release_otherwise() -> None:
    owner = LeadSummary("prj_test", "L", email="a@x.io", email_claim=CLAIM_A)
    assert promotion(owner, "a@x.io", CLAIM_A) is Promotion.AGAIN
    # the issue: a lead that owns A never takes B, and B is released (nobody's)
    assert promotion(owner, "b@x.io", CLAIM_B) is Promotion.RELEASE
    assert promotion(owner, "a@x.io", CLAIM_B) is Promotion.RELEASE


def test_promotion_of_a_lead_merged_away_is_a_release() -> None:
    assert promotion(None, "a@x.io", CLAIM_A) is Promotion.RELEASE
    assert promotion(LeadSummary("prj_test", "L"), "a@x.io", CLAIM_A) is Promotion.RELEASE


def test_merged_by_anonymous_id_follows_log_order_of_its_own_claim() -> None:
    unclaimed = LeadSummary("prj_test", "X")
    assert merged_by_anonymous_id(unclaimed, CLAIM_A)
    assert merged_by_anonymous_id(unclaimed, None)
    identified = LeadSummary("prj_test", "X", email="x@x.io")
    assert not merged_by_anonymous_id(identified, CLAIM_B)
    claiming = _pending("x@x.io", CLAIM_A)
    # its identify came first in the log: its claim decides it
    assert not merged_by_anonymous_id(claiming, CLAIM_B)
    assert not merged_by_anonymous_id(claiming, None)
    # the merge came first: merged, its claim answered later is given back
    assert merged_by_anonymous_id(_pending("x@x.io", CLAIM_B), CLAIM_A)


def test_claims_one_at_a_time_and_the_earliest_identify_in_the_log_wins() -> None:
    assert claims(LeadSummary("prj_test", "L"), CLAIM_B)
    assert not claims(LeadSummary("prj_test", "L", email="a@x.io"), CLAIM_A)
    pending = _pending("b@x.io", CLAIM_B)
    assert not claims(pending, (3_000, "e3"))  # later in the log: no effect whatever the reply
    assert not claims(pending, CLAIM_B)  # its own record again
    assert claims(pending, CLAIM_A)  # earlier in the log, reaching the lead late: it decides
    assert claims(pending, (2_000, "e1"))  # same record timestamp, smaller eventId
    assert not claims(_pending("b@x.io", None), CLAIM_A)  # pending since before claims had ids


def test_a_merge_reply_to_a_replaced_claim_is_superseded() -> None:
    pending = _pending("a@x.io", CLAIM_A)
    assert not superseded(pending, CLAIM_A)
    assert superseded(pending, CLAIM_B)
    assert not superseded(pending, None)
    # an owner's merge (a takeover names the earlier claimant's claim) is never superseded
    owner = LeadSummary("prj_test", "L", email="a@x.io", email_claim=CLAIM_B)
    assert not superseded(owner, CLAIM_A)


def test_pending_claim_survives_the_table_codec_and_old_summaries_decode() -> None:
    lead = _pending("a@x.io", CLAIM_A)
    assert decode_lead(encode_summary(lead)) == lead
    old = orjson.loads(encode_summary(lead))[:-1]  # written before pending_claim existed
    assert decode_lead(orjson.dumps(old)) == _pending("a@x.io", None)
