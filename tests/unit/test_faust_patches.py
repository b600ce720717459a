"""The Faust patches are fenced: one exact Faust release, and every patch's targets unchanged.

A patch whose target changed may no longer fix anything (or may break Faust), silently; these
tests make such an upgrade fail loudly, naming the patch to re-check (app/faust_patches.py).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import pytest

from app import faust_patches
from app.faust_patches import (
    FAUST_VERSION,
    PATCH_TARGETS,
    UnsupportedFaust,
    check_faust_version,
    source_digest,
)


def test_the_installed_faust_is_the_release_the_patches_target() -> None:
    assert importlib.metadata.version("faust-streaming") == FAUST_VERSION


def test_another_faust_release_is_refused() -> None:
    with pytest.raises(UnsupportedFaust, match=r"0\.15\.4"):
        check_faust_version("0.15.4")
    check_faust_version(FAUST_VERSION)


def test_every_patch_lists_what_it_relies_on() -> None:
    assert sorted(PATCH_TARGETS) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(PATCH_TARGETS.values())


@pytest.mark.parametrize(
    ("patch", "target", "digest"),
    [(n, t, d) for n, targets in PATCH_TARGETS.items() for t, d in targets],
    ids=lambda v: str(v),
)
def test_patch_target_is_unchanged(patch: int, target: str, digest: str) -> None:
    assert source_digest(target) == digest, (
        f"patch {patch} of app/faust_patches.py relies on {target}, whose code changed: "
        "re-check the patch against it, then record the new digest"
    )


def test_digests_are_of_the_originals_once_patches_are_applied() -> None:
    faust_patches.apply()
    faust_patches.apply()  # idempotent
    from faust.transport.producer import ProducerBuffer

    assert ProducerBuffer.flush is faust_patches._flush
    assert faust_patches.changed_targets() == []


class _FetchLoopOwner:
    """The slice of a Faust Consumer patch 7 reads."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()


async def test_patch7_awaits_the_delivery_directly_while_flow_runs() -> None:
    from app.faust_patches import _wait_first

    owner = _FetchLoopOwner()
    delivered: list[str] = []
    tasks_before = len(asyncio.all_tasks())

    async def deliver() -> str:
        delivered.append("record")
        assert len(asyncio.all_tasks()) == tasks_before  # no task of its own
        return "done"

    result = await _wait_first(owner, deliver(), owner.suspend_flow.wait())
    assert delivered == ["record"] and result.results == ["done"] and not result.stopped


async def test_patch7_leaves_faust_in_charge_when_flow_is_suspended() -> None:
    from app.faust_patches import _wait_first

    owner = _FetchLoopOwner()
    owner.suspend_flow.set()
    seen: list[Any] = []

    async def original(self: Any, *coros: Any, timeout: Any = None) -> str:
        seen.append(coros)
        for coro in coros:
            coro.close()
        return "faust's own"

    async def deliver() -> None:
        raise AssertionError("not delivered while flow is suspended")

    got = await _wait_first(owner, deliver(), owner.suspend_flow.wait(), _original=original)
    assert got == "faust's own" and len(seen) == 1


def test_patch8_gives_the_worker_consumer_the_configured_fetch_wait() -> None:
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    faust_patches.apply()
    assert AIOKafkaConsumerThread._create_worker_consumer is faust_patches._create_worker_consumer
    built = SimpleNamespace(_fetch_max_wait_ms=1500)  # what Faust builds
    got = faust_patches._create_worker_consumer(None, None, _original=lambda _self, _t: built)
    assert got is built
    assert got._fetch_max_wait_ms == faust_patches._fetch_max_wait_ms == 100
