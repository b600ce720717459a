"""Deployment settings are read once at start; a malformed one is refused there, naming itself
(SPEC 12: settings are input too)."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LEADSCORE_FETCH_MAX_WAIT_MS", "abc", "whole number"),
        ("LEADSCORE_PARTITIONS", "4.5", "whole number"),
        ("LEADSCORE_SESSION_TIMEOUT", "soon", "number"),
    ],
)
def test_a_malformed_number_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"^{name} must be a {says}, not '{value}'$"):
        Settings.from_env()


def test_the_fetch_wait_is_kept_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_FETCH_MAX_WAIT_MS", "0")
    assert Settings.from_env().fetch_max_wait_ms == 10
    monkeypatch.setenv("LEADSCORE_FETCH_MAX_WAIT_MS", "5000")
    assert Settings.from_env().fetch_max_wait_ms == 1_000
    monkeypatch.delenv("LEADSCORE_FETCH_MAX_WAIT_MS")
    assert Settings.from_env().fetch_max_wait_ms == 100
