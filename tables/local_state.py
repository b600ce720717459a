"""Local table state (RocksDB) is reused across restarts only after a clean stop (ADR 0012).

A worker writes a table key to RocksDB first and to its changelog shortly after. A worker
killed in between leaves RocksDB *ahead* of the changelog, with an older persisted changelog
offset; Faust's recovery then re-applies the changelog from that offset over the newer local
values. Every key ends up at one of two different moments, and a lead's summary and its facts
no longer belong to one history (found by the kill -9 tests: a fact chain rescored by a late
event was rolled back under a summary that said the event was applied).

The changelog, by contrast, is always a prefix of the writes, in order: it is exactly what
a worker taking over the partition rebuilds from, and the scoring agent redoes a record
whose writes it holds only in part. So after anything but a clean stop the local files are
dropped and recovery reads the changelogs from the start, like Kafka Streams does when a
state directory has no checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["CLEAN_STOP_MARK", "discard_unless_stopped_cleanly", "mark_stopped_cleanly"]

CLEAN_STOP_MARK = "CLEAN_STOP"


def discard_unless_stopped_cleanly(tabledir: Path) -> bool:
    """Before the tables open: keep `tabledir` if the last run stopped cleanly, else empty it.

    Returns True when state was discarded. The mark is consumed either way, so a crash of
    this run is detected by the next one.
    """
    mark = tabledir / CLEAN_STOP_MARK
    if mark.exists():
        mark.unlink()
        return False
    if not tabledir.exists() or not any(tabledir.iterdir()):
        return False
    shutil.rmtree(tabledir)
    tabledir.mkdir(parents=True)
    return True


def mark_stopped_cleanly(tabledir: Path) -> None:
    """After the tables closed and every changelog write was delivered."""
    tabledir.mkdir(parents=True, exist_ok=True)
    (tabledir / CLEAN_STOP_MARK).touch()
