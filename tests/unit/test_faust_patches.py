"""The Faust patches are fenced: one exact Faust release, and every patch's targets unchanged.

A patch whose target changed may no longer fix anything (or may break Faust), silently; these
tests make such an upgrade fail loudly, naming the patch to re-check (app/faust_patches.py).
"""

from __future__ import annotations

import importlib.metadata

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
    assert sorted(PATCH_TARGETS) == [1, 2, 3, 4, 5, 6]
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
