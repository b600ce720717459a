"""Local table state is reused only after a clean stop (tables/local_state.py, ADR 0012)."""

from __future__ import annotations

from pathlib import Path

from tables.local_state import (
    CLEAN_STOP_MARK,
    discard_unless_stopped_cleanly,
    mark_stopped_cleanly,
)


def _tables(tmp_path: Path) -> Path:
    tabledir = tmp_path / "v1" / "tables"
    (tabledir / "lead-state-0.db").mkdir(parents=True)
    (tabledir / "lead-state-0.db" / "000009.log").write_bytes(b"rocksdb")
    return tabledir


def test_state_left_by_a_crash_is_discarded(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    assert discard_unless_stopped_cleanly(tabledir) is True
    assert tabledir.is_dir() and list(tabledir.iterdir()) == []


def test_state_left_by_a_clean_stop_is_kept_and_the_mark_consumed(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    mark_stopped_cleanly(tabledir)
    assert discard_unless_stopped_cleanly(tabledir) is False
    assert (tabledir / "lead-state-0.db" / "000009.log").read_bytes() == b"rocksdb"
    assert not (tabledir / CLEAN_STOP_MARK).exists()
    # the run that consumed the mark crashes: the next start discards
    assert discard_unless_stopped_cleanly(tabledir) is True


def test_a_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    assert discard_unless_stopped_cleanly(tmp_path / "absent") is False
    (tmp_path / "empty").mkdir()
    assert discard_unless_stopped_cleanly(tmp_path / "empty") is False
