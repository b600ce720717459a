"""Issue 10 finding 8: an `Idempotency-Key` names the eventId of an event sent without one, the
same on every process and after restarts (a name-based UUID), distinct across projects and
batch positions."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from core.events import idempotent_event_id

names = st.text(min_size=1, max_size=20)


@given(names, names, st.none() | st.integers(0, 999))
def test_the_same_project_key_and_index_always_give_the_same_event_id(
    project: str, key: str, index: int | None
) -> None:
    first = idempotent_event_id(project, key, index)
    assert first == idempotent_event_id(project, key, index)
    assert uuid.UUID(first).version == 5


def test_the_event_id_is_stable_across_releases() -> None:
    # a retry may reach a worker of the next release: the derivation must never change
    assert idempotent_event_id("prj_1", "order-1") == "90265b29-e4f3-5a50-a6a3-492e8b497cf4"
    assert idempotent_event_id("prj_1", "order-1", 0) != "90265b29-e4f3-5a50-a6a3-492e8b497cf4"


@given(names, names, names)
def test_other_projects_keys_or_batch_positions_give_other_event_ids(
    project: str, other: str, key: str
) -> None:
    ids = {idempotent_event_id(project, key), idempotent_event_id(project, key, 0)}
    ids.add(idempotent_event_id(project, key, 1))
    assert len(ids) == 3
    if other != project:
        assert idempotent_event_id(other, key) != idempotent_event_id(project, key)


def test_separators_inside_names_cannot_make_two_requests_collide() -> None:
    assert idempotent_event_id("a\nb", "c") != idempotent_event_id("a", "b\nc")
