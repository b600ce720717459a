"""The erasure drop rule and the purge tool's view of a record (ADR 0020): pure parts."""

from __future__ import annotations

import hashlib

import orjson

from app.erasures import ErasureDirectory, erasure_record, key_hash
from app.purge import lead_key_of
from app.settings import Settings


def directory() -> ErasureDirectory:
    return ErasureDirectory(Settings.from_env())


def test_an_event_logged_at_or_before_the_erasure_is_dropped_and_a_later_one_is_not() -> None:
    erasures = directory()
    erasures.apply("prj_a", key_hash("prj_a", "lead-1"), 1_000)
    assert erasures.drops("prj_a", "lead-1", 999)
    assert erasures.drops("prj_a", "lead-1", 1_000)
    assert not erasures.drops("prj_a", "lead-1", 1_001)
    assert not erasures.drops("prj_b", "lead-1", 10)  # another project's key of that name
    assert not erasures.drops("prj_a", "lead-2", 10)


def test_a_key_erased_twice_keeps_the_later_erasure() -> None:
    erasures = directory()
    digest = key_hash("prj_a", "lead-1")
    erasures.apply("prj_a", digest, 2_000)
    erasures.apply("prj_a", digest, 1_000)  # read out of order
    assert erasures.erased_at("prj_a", "lead-1") == 2_000


def test_records_are_recognised_by_their_kafka_key_without_reading_the_value() -> None:
    erasures = directory()
    erasures.apply("prj_a", key_hash("prj_a", "lead:with:colons"), 1_000)
    assert erasures.drops_record(b"prj_a:lead:with:colons", 500)
    assert not erasures.drops_record(b"no-colon", 500)
    assert not erasures.drops_record(b"\xff\xfe", 500)
    assert not erasures.drops_record(None, 500)


def test_the_erasure_record_keeps_the_hash_never_the_key() -> None:
    key, value = erasure_record("prj_a", "person@example.com", 1_000, {"kind": "admin"})
    digest = hashlib.sha256(b"prj_a:person@example.com").hexdigest()
    assert key == f"prj_a:{digest}".encode()
    assert orjson.loads(value) == {
        "projectId": "prj_a",
        "keyHash": digest,
        "erasedAt": 1_000,
        "by": {"kind": "admin"},
    }
    assert b"person" not in key + value


def test_the_purge_tool_reads_the_lead_key_like_the_scoring_agent() -> None:
    assert lead_key_of(b'{"projectId": "p", "leadId": "l", "anonymousId": "a"}') == ("p", "l")
    assert lead_key_of(b'{"projectId": "p", "anonymousId": "a"}') == ("p", "a")
    assert lead_key_of(b"{bad") is None
    assert lead_key_of(b"[1]") is None
    assert lead_key_of(None) is None
