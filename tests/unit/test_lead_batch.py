"""The scoring hot path (`tables.lead_batch.LeadBatch` over `LeadStore`) equals `core`.

Arbitrary logs — several leads, permutations, duplicates, late events, random batch cuts, with
the unit of work sometimes written to local state between batches and sometimes still pending
(reads then merge it) — must leave every lead bit for bit where `core.lead.score_events` puts
the set of its distinct events: summary, stored facts, and the history rows a sink would hold
after applying each batch's coalesced rows in order. `LeadBatch.prefixes` (automation's view of
the lead after each prefix of a batch) must equal applying that prefix, bit for bit.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import DEFAULT_RULES, Rule, ScoringConfig
from core.lead import HistoryRow, LeadSummary, NewEvent, current_score, score_events
from core.timeutil import US_PER_DAY, US_PER_HOUR, parse_timestamp
from tables.codec import Source
from tables.lead_batch import LeadBatch
from tables.leads import LeadStore

BASE = parse_timestamp("2026-01-01T00:00:00Z")
NOW = BASE + 40 * US_PER_DAY
RULES = dict(DEFAULT_RULES) | {"paused_rule": Rule(40, active=False)}
TYPES = [*RULES, "feature_used", "identify"]

configs = st.builds(
    ScoringConfig,
    rules=st.just(RULES),
    grace_days=st.sampled_from([7, 0, 3]),
    daily_rate=st.sampled_from([0.05, 0.3, 1.0]),
)
timestamps = st.one_of(
    st.integers(0, 40 * 24).map(lambda h: BASE + h * US_PER_HOUR),
    st.integers(0, 40 * US_PER_DAY).map(lambda us: BASE + us),
)
events = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # lead
    st.text(alphabet="abcdefgh", min_size=1, max_size=2),  # eventId
    st.sampled_from(TYPES),
    timestamps,
    st.sampled_from([None, "anon-1", "anon-2"]),  # anonymousId
)


class _Store:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}


class _Table:
    """The slice of a Faust table LeadStore uses on memory:// (a dict under `.data.data`)."""

    def __init__(self) -> None:
        self.data = _Store()


def _write_pending_locally(store: LeadStore) -> None:
    """`LeadStore.commit` without the changelog: the unit of work into local state."""
    records = [(p, k, v) for k, (p, v) in store._pending.items()]
    store._pending, store._groups = {}, {}
    store._write_local(records)
    store.recent.settle()


def _apply_batch(
    store: LeadStore,
    batch: list[tuple[int, Any]],
    config: ScoringConfig,
    sink: dict[str, Any],
    settles: list[bool],
    now: int = NOW,
) -> None:
    """What the scoring agent does with one batch (at `now`): group by lead, dedup, apply,
    write once."""
    by_lead: dict[str, list[tuple[int, Any]]] = {}
    for offset, event in batch:
        by_lead.setdefault(event[0], []).append((offset, event))
    for lead_id, items in by_lead.items():
        key = f"p:{lead_id}".encode()
        state = store.get(key, 0)
        assert state is None or isinstance(state, LeadSummary)
        seen: set[str] = set()
        fresh = []
        for offset, (_, event_id, event_type, ts, anonymous_id) in items:
            if event_id in seen or store.event_source(key, event_id, 0)[0]:
                continue
            seen.add(event_id)
            fresh.append((offset, event_id, event_type, ts, anonymous_id))
        if not fresh:
            continue
        lead = LeadBatch(
            store, key, 0, state or LeadSummary("p", lead_id), config, now, known=state is not None
        )
        dedup = []
        for offset, event_id, event_type, ts, anonymous_id in fresh:
            source: Source = (0, offset)
            lead.add(ts, event_id, event_type, {"n": offset}, anonymous_id, source)
            if settles[offset % len(settles)]:  # chained now (as with automation), or later
                lead.settle()
            dedup.append((event_id, ts, {"n": offset}, source))
        summary = lead.summary()
        at = lead.prefixes()  # automation's view of the lead after each prefix of the batch
        for k in range(len(fresh) + 1):
            applied = LeadBatch(
                store, key, 0, state or LeadSummary("p", lead_id), config, now, known=bool(state)
            )
            for offset, event_id, event_type, ts, anonymous_id in fresh[:k]:
                applied.add(ts, event_id, event_type, None, anonymous_id, (0, offset))
            expected = applied.view()
            assert at(k) == (
                current_score(expected.summary, now, config),
                expected.events_last_24h,
            )
        lead.write(store, summary, dedup)
        rows = sink.setdefault(lead_id, {})
        for row in lead.rows.values():
            rows[row.event_id] = row
        view = lead.view(summary)
        in_window = sum(1 for f in store.all_facts(key, 0) if now - US_PER_DAY < f.timestamp <= now)
        assert view.events_last_24h == in_window  # `store.recent`, extended or read
        assert store.view_at(key, 0, summary, config, now).events_last_24h == in_window


@settings(max_examples=300, deadline=None)
@given(
    config=configs,
    log=st.lists(events, min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=40),
    flushes=st.lists(st.booleans(), min_size=1, max_size=40),
    settles=st.lists(st.booleans(), min_size=1, max_size=40),
    hours=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    discards=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_the_batched_path_equals_core_on_arbitrary_logs(
    config: ScoringConfig,
    log: list[Any],
    cuts: list[int],
    flushes: list[bool],
    settles: list[bool],
    hours: list[int],
    discards: list[bool],
) -> None:
    """`now` moves on between batches (the velocity window with it, and `store.recent`'s
    entries must follow); some batches are first applied, discarded (a failed attempt) and
    applied again."""
    store = LeadStore(_Table(), partitions=1)  # type: ignore[arg-type]
    sink: dict[str, dict[str, HistoryRow]] = {}
    offset, n = 0, 0
    now = NOW - 5 * US_PER_DAY
    while offset < len(log):
        size = cuts[n % len(cuts)]
        batch = list(enumerate(log))[offset : offset + size]
        now += hours[n % len(hours)] * US_PER_HOUR
        if discards[n % len(discards)]:  # a failed attempt: its writes and entries forgotten
            _write_pending_locally(store)  # (the unit of work is the batch then)
            _apply_batch(store, batch, config, {}, settles, now)
            store.discard()
        _apply_batch(store, batch, config, sink, settles, now)
        if flushes[n % len(flushes)]:
            _write_pending_locally(store)
        offset += size
        n += 1
    for lead_id in {e[0] for e in log}:
        distinct: dict[str, NewEvent] = {}
        first_props: dict[str, int] = {}
        for i, (lead, event_id, event_type, ts, _) in enumerate(log):
            if lead == lead_id and event_id not in distinct:
                distinct[event_id] = NewEvent(
                    ts, event_id, event_type, config.points_for(event_type)
                )
                first_props[event_id] = i
        facts, rows = score_events(distinct.values(), config)
        key = f"p:{lead_id}".encode()
        summary = store.get(key, 0)
        assert isinstance(summary, LeadSummary)
        assert list(store.all_facts(key, 0)) == facts
        assert summary.score == facts[-1].score_after  # bit for bit
        assert (summary.last_timestamp, summary.last_event_id) == facts[-1].order
        assert summary.first_timestamp == facts[0].timestamp
        assert summary.event_count == len(facts) == summary.version
        held = sink[lead_id]
        assert set(held) == {r.event_id for r in rows}
        for row in rows:
            got = held[row.event_id]
            assert (got.score_before, got.score_after, got.points, got.timestamp) == (
                row.score_before,
                row.score_after,
                row.points,
                row.timestamp,
            )
        for event_id, i in first_props.items():
            assert store.event_record(key, event_id, 0) == (distinct[event_id].timestamp, {"n": i})
        anonymous = [e[4] for e in log if e[0] == lead_id and e[4] is not None]
        assert set(summary.anonymous_ids) <= set(anonymous)


def test_a_redo_after_a_crash_does_not_count_its_events_twice_in_the_velocity_window() -> None:
    """A crash left a record's fact and dedup row but not the summary that counts them; a read
    meanwhile remembers the lead's recent timestamps with that fact among them. The redo applies
    the record again (the same fact): the window must hold it once."""
    config = ScoringConfig(rules=RULES)
    store = LeadStore(_Table(), partitions=1)  # type: ignore[arg-type]
    key = b"p:a"
    first = LeadBatch(store, key, 0, LeadSummary("p", "a"), config, NOW, known=False)
    first.add(NOW - US_PER_HOUR, "e1", "page_view", None, None, (0, 1))
    summary = first.summary()
    first.write(store, summary, [("e1", NOW - US_PER_HOUR, None, (0, 1))])
    _write_pending_locally(store)
    crashed = LeadBatch(store, key, 0, summary, config, NOW)  # its summary never written
    crashed.add(NOW - 2 * US_PER_HOUR, "e2", "download", None, None, (0, 2))
    crashed.settle()
    store.record_event(key, "e2", NOW - 2 * US_PER_HOUR, None, (0, 2), 0)
    for fact in crashed.writes.values():
        store.put_fact(key, fact, 0)
    _write_pending_locally(store)
    store = LeadStore(store.table, partitions=1)  # the worker restarted: nothing remembered
    assert store.view_at(key, 0, summary, config, NOW).events_last_24h == 2  # a read meanwhile
    redo = LeadBatch(store, key, 0, summary, config, NOW, redone=frozenset({"e2"}))
    redo.add(NOW - 2 * US_PER_HOUR, "e2", "download", None, None, (0, 2))
    after = redo.summary()
    redo.write(store, after, [("e2", NOW - 2 * US_PER_HOUR, None, (0, 2))])
    _write_pending_locally(store)
    assert after.event_count == 2
    assert store.view_at(key, 0, after, config, NOW).events_last_24h == 2
