"""The dead-letter index document: its id, its project and its reason class (issue #15)."""

from __future__ import annotations

import orjson

from app.dead_letters import dead_letter_doc, project_of_record


def test_project_comes_from_the_value_then_from_the_key() -> None:
    assert project_of_record("prj_a:lead", '{"projectId": "prj_b"}') == "prj_b"
    assert project_of_record("prj_a:lead", "{not json") == "prj_a"
    assert project_of_record("prj_a:lead", '{"event": {"projectId": "prj_c"}}') == "prj_c"
    assert project_of_record("no-colon", "[]") is None
    assert project_of_record(None, None) is None
    assert project_of_record("a b:lead", '{"projectId": {"$ne": 1}}') is None


def test_id_is_the_original_position_so_a_second_dead_letter_is_the_same_document() -> None:
    value = {
        "reason": "invalid JSON: unexpected end",
        "errors": [],
        "topic": "pfx.events",
        "partition": 3,
        "offset": 1042,
        "key": "prj_a:lead",
        "value": "{not json",
        "deadLetteredAt": 1_700_000_000.5,
    }
    first = dead_letter_doc(orjson.dumps(value), "pfx", 0, 7)
    again = dead_letter_doc(orjson.dumps(value), "pfx", 1, 99)
    assert first["_id"] == again["_id"] == "events-3-1042"
    assert first["projectId"] == "prj_a"
    assert first["reasonClass"] == "invalid JSON"
    assert first["status"] == "open"


def test_a_record_not_written_by_leadscore_is_kept_under_its_own_position() -> None:
    doc = dead_letter_doc(b"\xff garbage", "pfx", 2, 5)
    assert doc["_id"] == "dead-letter-2-5"
    assert doc["projectId"] is None
    assert doc["reasonClass"] == "other"


def test_a_dead_letter_without_an_original_position_is_kept_under_its_own() -> None:
    value = {
        "reason": "cannot be written to MongoDB: x",
        "topic": "pfx.lead-changes",
        "partition": None,
        "offset": None,
        "key": "prj_a:l",
        "value": "{}",
    }
    doc = dead_letter_doc(orjson.dumps(value), "pfx", 4, 17)
    assert doc["_id"] == "dead-letter-4-17"
    assert doc["topic"] == "lead-changes" and doc["projectId"] == "prj_a"


def test_odd_field_types_never_stop_the_indexer() -> None:
    value = {
        "reason": 5,
        "topic": "pfx.events",
        "partition": 1,
        "offset": 2,
        "key": 7,
        "value": {"projectId": "prj_a"},
        "errors": "no",
        "deadLetteredAt": 1e300,
    }
    doc = dead_letter_doc(orjson.dumps(value), "pfx", 0, 0)
    assert doc["key"] == "7" and doc["projectId"] == "prj_a" and doc["errors"] == []
    assert doc["reasonClass"] == "other"
