"""`tables.recent.RecentEvents`: a lead's recent timestamps, valid for one state of the lead.

(`tests/unit/test_lead_batch.py` holds the store's velocity counts equal to a scan on arbitrary
logs; these are the cache's own rules.)"""

from __future__ import annotations

from tables.recent import RecentEvents

A = (3, 3, 30, "e3")  # a lead's state: version, event count, last event
B = (4, 4, 40, "e4")


def test_counts_the_window_of_the_state_it_was_read_for() -> None:
    recent = RecentEvents()
    recent.put(b"k", A, 0, [10, 20, 30], pending=False)
    assert recent.count(b"k", A, 0, 100) == 3
    assert recent.count(b"k", A, 10, 25) == 1  # after 10, until 25: only 20
    assert recent.count(b"k", B, 0, 100) is None  # the lead has changed since
    assert recent.count(b"k", A, -5, 100) is None  # reaches before what was read
    assert recent.count(b"other", A, 0, 100) is None


def test_an_extension_counts_only_once_its_unit_of_work_is_committed() -> None:
    recent = RecentEvents()
    recent.put(b"k", A, 8, [10, 20, 30], pending=False)
    recent.extend(b"k", A, B, [40, 5])  # 5 is before what was read (after 8): not kept
    assert recent.count(b"k", B, 8, 100) == 4  # the unit of work sees its own writes
    recent.discard()  # the batch failed
    assert recent.count(b"k", B, 8, 100) is None
    assert recent.count(b"k", A, 8, 100) == 3
    recent.extend(b"k", A, B, [40])
    recent.settle()
    assert recent.count(b"k", B, 8, 100) == 4
    assert recent.count(b"k", A, 8, 100) is None


def test_an_extension_from_another_state_drops_the_entry() -> None:
    recent = RecentEvents()
    recent.put(b"k", A, 0, [10, 20, 30], pending=False)
    recent.extend(b"k", B, (5, 5, 50, "e5"), [50])  # not from the state it knows
    recent.settle()
    assert recent.count(b"k", (5, 5, 50, "e5"), 0, 100) is None


def test_a_window_that_moved_on_is_pruned_and_still_counted_right() -> None:
    recent = RecentEvents()
    recent.put(b"k", A, 0, list(range(1, 101)), pending=False)
    assert recent.count(b"k", A, 80, 90) == 10  # prunes 1..80
    assert recent.count(b"k", A, 80, 200) == 20
    assert recent.count(b"k", A, 85, 95) == 10
    assert recent.count(b"k", A, 79, 200) is None  # pruned: before what it keeps now


def test_bounded_in_leads_and_in_timestamps_per_lead() -> None:
    recent = RecentEvents(max_leads=2, max_stamps=3)
    recent.put(b"a", A, 0, [1], pending=False)
    recent.put(b"b", A, 0, [1], pending=False)
    assert recent.count(b"a", A, 0, 9) == 1  # used: b is now the least recent
    recent.put(b"c", A, 0, [1], pending=False)
    assert recent.count(b"b", A, 0, 9) is None
    assert recent.count(b"a", A, 0, 9) == 1
    recent.put(b"a", B, 0, [1, 2, 3, 4], pending=False)  # too many: counted by a scan
    assert recent.count(b"a", B, 0, 9) is None
