"""The access model's pure parts: migration of older project records, origins, who may do
what, and the login throttle (SPEC 10)."""

from __future__ import annotations

import pytest

from app.access import (
    ROLE_PERMISSIONS,
    KeyRecord,
    hash_secret,
    key_permissions,
    new_key,
)
from app.origins import normalize_origin
from app.ratelimit import LoginThrottle, RateLimits
from app.records import ProjectRecord


def test_a_project_with_bare_key_hashes_gets_secret_keys_with_every_scope() -> None:
    record = ProjectRecord.model_validate(
        {"projectId": "prj_1", "name": "old", "keyHashes": ["ab" * 32], "createdAt": "t"}
    )
    (key,) = record.keys
    assert key.kind == "secret" and key.scopes == ["ingest", "read", "write", "admin"]
    assert key.hash == "ab" * 32 and key.prefix == "lsk_" and key.createdAt == "t"
    assert "keyHashes" not in record.model_dump()
    assert key_permissions(key) == ROLE_PERMISSIONS["owner"]


def test_migration_is_idempotent_and_keeps_new_keys() -> None:
    once = ProjectRecord.model_validate(
        {"projectId": "p", "name": "n", "keyHashes": ["cd" * 32]}
    ).model_dump(mode="json")
    again = ProjectRecord.model_validate({**once, "keyHashes": ["cd" * 32]})
    assert [k.hash for k in again.keys] == ["cd" * 32]


def test_key_kinds_have_distinct_prefixes_and_publishable_keys_only_ingest() -> None:
    assert new_key("secret").startswith("lss_") and new_key("publishable").startswith("lsp_")
    publishable = KeyRecord(
        id="k", name="web", kind="publishable", prefix="lsp_", scopes=[], hash="h", createdAt=""
    )
    assert key_permissions(publishable) == {"ingest"}
    assert hash_secret("x") != hash_secret("y")


def test_roles_spec_10() -> None:
    assert ROLE_PERMISSIONS["member"] == {"read", "rules"}  # not settings, not keys
    assert ROLE_PERMISSIONS["viewer"] == {"read"}
    assert "ingest" not in ROLE_PERMISSIONS["admin"] and "admin" in ROLE_PERMISSIONS["admin"]


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("https://WWW.Example.com", "https://www.example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
    ],
)
def test_origins_are_normalized(given: str, origin: str) -> None:
    assert normalize_origin(given) == origin


@pytest.mark.parametrize(
    "bad", ["*", "https://a.com/", "https://a.com/x", "a.com", "ftp://a.com", "https://u@a.com"]
)
def test_anything_but_an_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_origin(bad)


def test_login_throttle_slows_then_refuses_per_identity() -> None:
    throttle = LoginThrottle(slow_after=2, lock_after=4, window_seconds=60)
    who = ["email:a@b.c", "ip:1.2.3.4"]
    assert throttle.check(who) == (0.0, None)
    throttle.failed(who)
    throttle.failed(who)
    delay, refused = throttle.check(who)
    assert delay > 0 and refused is None
    throttle.failed(who)
    throttle.failed(who)
    delay, refused = throttle.check(who)
    assert refused is not None and 1 <= refused <= 60
    assert throttle.check(["email:other@b.c"]) == (0.0, None)  # others are unaffected
    assert throttle.check(["ip:1.2.3.4"])[1] is not None  # the address is locked on its own
    throttle.succeeded(["email:a@b.c"])
    assert throttle.check(["email:a@b.c"]) == (0.0, None)


def test_rate_limits_count_per_credential() -> None:
    limits = RateLimits("3/minute", "1/minute")
    assert [limits.hit("key:a", False).allowed for _ in range(4)] == [True, True, True, False]
    assert limits.hit("key:b", False).allowed
    refused = limits.hit("key:a", False)
    assert refused.headers()["Retry-After"] and refused.headers()["RateLimit-Remaining"] == "0"
    assert [limits.hit("key:p", True).allowed for _ in range(2)] == [True, False]


def test_session_tokens_have_a_shape_that_is_checked_before_any_lookup() -> None:
    from app.access import looks_like_session_token, new_session_token

    assert all(looks_like_session_token(new_session_token()) for _ in range(200))
    for garbage in ("lst_", "lst_short", "lss_" + "a" * 43, "lst_" + "a" * 44):
        assert not looks_like_session_token(garbage)
