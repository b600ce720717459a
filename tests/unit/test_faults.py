"""ADR 0015's error classes, the skips of the projects and control readers, and the
byte-bounded splitting of leadscore's own messages (pure code, no services)."""

from __future__ import annotations

import errno

import orjson
import pytest
from aiokafka import errors as kafka_errors
from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st
from pymongo import errors as mongo_errors

from app.faults import is_temporary
from app.projects import ProjectDirectory
from app.records import (
    ProjectRecord,
    lead_change,
    lead_changes,
    split_by_bytes,
)
from app.replay import _epoch_of
from app.settings import Settings
from core.config import default_config
from core.lead import HistoryRow, LeadSummary, lead_view
from core.timeutil import US_PER_DAY, parse_timestamp


def _bulk_error(*codes: int, concern: bool = False) -> mongo_errors.BulkWriteError:
    return mongo_errors.BulkWriteError(
        {
            "writeErrors": [
                {"index": i, "code": c, "errmsg": f"e{c}"} for i, c in enumerate(codes)
            ],
            "writeConcernErrors": [{"code": 64}] if concern else [],
        }
    )


TEMPORARY: list[BaseException] = [
    OSError(errno.ENOSPC, "No space left on device"),
    ConnectionResetError(),
    TimeoutError(),
    Exception("IO error: No space left on device: While appending to file"),  # rocksdict
    kafka_errors.KafkaTimeoutError(),
    kafka_errors.KafkaConnectionError(),
    kafka_errors.NotLeaderForPartitionError(),
    kafka_errors.RequestTimedOutError(),
    mongo_errors.AutoReconnect("connection closed"),
    mongo_errors.ServerSelectionTimeoutError("no servers"),
    mongo_errors.NotPrimaryError("not primary"),
    mongo_errors.NetworkTimeout("timed out"),
    mongo_errors.OperationFailure("stepped down", code=189),
    _bulk_error(91, 189),
    _bulk_error(11000, concern=True),
]
PERMANENT: list[BaseException] = [
    ValueError("invalid"),
    KeyError("projectId"),
    TypeError("unhashable"),
    OverflowError("MongoDB can only handle up to 8-byte ints"),
    InvalidDocument("Key names must not contain the NULL byte"),
    mongo_errors.DocumentTooLarge("too large"),
    mongo_errors.OperationFailure("bad value", code=2),
    _bulk_error(2),
    _bulk_error(189, 2),  # one refused write makes the batch permanent: it must be split
    kafka_errors.MessageSizeTooLargeError(),
    RuntimeError("3 upserts kept colliding on a unique index"),
]


@pytest.mark.parametrize("exc", TEMPORARY, ids=repr)
def test_adr15_temporary_faults_are_retried(exc: BaseException) -> None:
    assert is_temporary(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=repr)
def test_adr15_errors_of_the_record_are_permanent(exc: BaseException) -> None:
    assert not is_temporary(exc)


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=60), st.integers(50, 400))
def test_split_by_bytes_keeps_order_and_stays_within_the_budget(
    items: list[bytes], budget: int
) -> None:
    parts = split_by_bytes(items, budget)
    assert [i for part in parts for i in part] == items
    for part in parts:
        assert part
        assert sum(map(len, part)) + len(part) - 1 <= budget


def _rows(n: int, props: int = 0) -> list[HistoryRow]:
    t0 = parse_timestamp("2026-01-01T00:00:00Z")
    return [
        HistoryRow(
            f"event-{i:05d}", "page_view", t0 + i, 5, 5.0 * i, 5.0 * i + 5, {"p": "x" * props}
        )
        for i in range(n)
    ]


def test_finding5_a_lead_change_with_thousands_of_rows_is_split_under_the_limit() -> None:
    summary = LeadSummary("p", "L", score=10.0, last_timestamp=0, event_count=5000, version=7)
    view = lead_view(summary, 30 * US_PER_DAY, default_config(), 0)
    rows = _rows(5000, props=300)
    whole = lead_change("upsert", view, rows, epoch=1)
    limit = 64 * 1024
    parts = lead_changes("upsert", view, rows, epoch=1, max_bytes=limit)
    assert len(whole) > 20 * limit
    assert len(parts) > 20
    decoded = [orjson.loads(p) for p in parts]
    assert all(len(p) <= limit for p in parts)
    # every part: the whole lead at one version; together: every row once, in order
    assert all(d["lead"] == orjson.loads(whole)["lead"] for d in decoded)
    assert [r for d in decoded for r in d["history"]] == orjson.loads(whole)["history"]


def test_finding5_a_change_without_rows_is_one_message() -> None:
    summary = LeadSummary("p", "L", score=1.0, last_timestamp=0, event_count=1, version=1)
    view = lead_view(summary, 0, default_config(), 1)
    assert lead_changes("upsert", view, (), max_bytes=65536) == [lead_change("upsert", view)]


@pytest.mark.parametrize(
    "value",
    [
        b"\xff{",
        b"null",
        b"[]",
        b"{}",
        b'{"appVersion": "2"}',
        b'{"appVersion": 0}',
        b'{"appVersion": true}',
    ],
)
def test_spec12_a_control_record_that_does_not_parse_keeps_the_previous_epoch(value: bytes) -> None:
    assert _epoch_of(value, 3) == 3


def test_a_control_record_names_the_epoch() -> None:
    assert _epoch_of(b'{"appVersion": 4, "previous": 3}', 3) == 4


def test_finding1_the_projects_directory_skips_a_record_it_cannot_read_and_reports_it() -> None:
    directory = ProjectDirectory(Settings.from_env())
    good = ProjectRecord(projectId="prj_a", name="a", version=1)
    directory.receive(b"prj_a", good.to_wire())
    directory.receive(b"prj_a", b'{"projectId": "prj_a", "name": "a", "settings": null}')
    directory.receive(b"prj_b", b"\xff{not json")
    # found by the topic fuzz: the key-hash migration raised TypeError, not a ValidationError
    directory.receive(b"prj_c", b'{"projectId": "prj_c", "name": "c", "keyHashes": [null]}')
    assert directory.get("prj_a") == good  # the last good record stays
    assert directory.get("prj_c") is None
    assert set(directory.skipped) == {"prj_a", "prj_b", "prj_c"}
    directory.receive(b"prj_a", good.model_copy(update={"version": 2}).to_wire())
    assert set(directory.skipped) == {"prj_b", "prj_c"}
    assert directory.get("prj_a").version == 2  # type: ignore[union-attr]


class _MemoryTable:
    """The slice of a Faust table LeadStore reads on memory:// (a dict under `.data.data`)."""

    def __init__(self, entries: dict[bytes, bytes]) -> None:
        self.data = type("Store", (), {"data": entries})()


def test_spec12_an_unreadable_table_entry_does_not_end_the_decay_sweep_for_other_leads() -> None:
    from tables.codec import encode_summary
    from tables.leads import LeadStore

    good = [LeadSummary("p", lead, score=1.0, last_timestamp=0, event_count=1) for lead in "ac"]
    entries = {b"Sp:" + s.lead_id.encode(): encode_summary(s) for s in good}
    entries[b"Sp:b"] = b'[1, "p", "b", "not a score"]'  # what no check caught
    store = LeadStore(_MemoryTable(entries))  # type: ignore[arg-type]
    assert [k for k, _ in store.states(0, skip_unreadable=True)] == [b"p:a", b"p:c"]
    with pytest.raises(ValueError):
        list(store.states(0))
