"""The access model of SPEC 10 as plain data: credentials, scopes, roles and what each may do.

No I/O here: the web layer finds out *who* is calling (`web/base.py`), this module says *what*
that caller may do, so the whole model can be read (and unit-tested) in one place.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "KEY_PREFIXES",
    "LEGACY_KEY_PREFIX",
    "PERMISSIONS",
    "ROLES",
    "ROLE_PERMISSIONS",
    "SCOPES",
    "SCOPE_PERMISSIONS",
    "SESSION_PREFIX",
    "Caller",
    "KeyKind",
    "KeyRecord",
    "Permission",
    "Role",
    "Scope",
    "hash_secret",
    "key_permissions",
    "looks_like_session_token",
    "new_key",
    "new_key_id",
    "new_session_token",
    "shown_prefix",
]

Scope = Literal["ingest", "read", "write", "admin"]
Role = Literal["owner", "admin", "member", "viewer"]
KeyKind = Literal["secret", "publishable"]
# What a route needs. `rules` covers rules and automations, `settings` the project settings: a
# `member` may change rules but not settings, while a key's `write` scope covers both.
Permission = Literal["ingest", "read", "rules", "settings", "admin"]

SCOPES: tuple[Scope, ...] = ("ingest", "read", "write", "admin")
ROLES: tuple[Role, ...] = ("owner", "admin", "member", "viewer")
PERMISSIONS: tuple[Permission, ...] = ("ingest", "read", "rules", "settings", "admin")

SCOPE_PERMISSIONS: dict[Scope, frozenset[Permission]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "write": frozenset({"rules", "settings"}),
    "admin": frozenset({"admin"}),
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": frozenset({"read", "rules", "settings", "admin"}),
    "member": frozenset({"read", "rules"}),
    "viewer": frozenset({"read"}),
}

KEY_PREFIXES: dict[KeyKind, str] = {"secret": "lss_", "publishable": "lsp_"}
LEGACY_KEY_PREFIX = "lsk_"  # keys issued before scopes existed: secret keys with every scope
SESSION_PREFIX = "lst_"
SHOWN_PREFIX_CHARS = 8  # how much of a key the listing shows ("lss_AbCd"), enough to tell apart


def new_key(kind: KeyKind) -> str:
    """256 random bits behind a prefix that tells secret from publishable keys at a glance."""
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


SESSION_TOKEN_LENGTH = len(SESSION_PREFIX) + 43  # token_urlsafe(32): 43 characters


def looks_like_session_token(value: str) -> bool:
    """Cheap shape check, so that garbage is refused without a MongoDB lookup."""
    return len(value) == SESSION_TOKEN_LENGTH and value.startswith(SESSION_PREFIX)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_secret(value: str) -> str:
    """SHA-256 of a key or session token (ADR 0007): they carry 256 random bits, so a slow hash
    would add CPU on every request and no safety. Passwords use argon2 instead (app/users.py)."""
    return hashlib.sha256(value.encode()).hexdigest()


class KeyRecord(BaseModel):
    """One API key of a project, as stored in MongoDB and on the projects topic: never the key
    itself, only its hash and the first characters shown in listings."""

    model_config = ConfigDict(extra="ignore")
    id: str
    name: str = Field(min_length=1, max_length=200)
    kind: KeyKind
    prefix: str
    scopes: list[Scope]
    hash: str
    createdAt: str

    def listing(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude={"hash"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and for which project, with what they may do there.

    `kind` is one of `admin` (the deployment token), `key` (a secret or publishable key) or
    `user` (a session). `actor` names the caller in the audit log, never with a secret in it.
    """

    kind: Literal["admin", "key", "user"]
    actor: dict[str, str]
    project_id: str | None = None
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    key: KeyRecord | None = None
    user_id: str | None = None
    role: Role | None = None
    session_hash: str | None = None

    @property
    def publishable(self) -> bool:
        return self.key is not None and self.key.kind == "publishable"

    @property
    def limit_id(self) -> str:
        """The identity rate limits count against: one bucket per credential."""
        if self.key is not None:
            return f"key:{self.key.id}"
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return "admin"


def key_permissions(key: KeyRecord) -> frozenset[Permission]:
    if key.kind == "publishable":
        return frozenset({"ingest"})  # and only from an allowed origin, checked by the caller
    out: set[Permission] = set()
    for scope in key.scopes:
        out |= SCOPE_PERMISSIONS[scope]
    return frozenset(out)


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]
