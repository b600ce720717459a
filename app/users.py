"""Users, their roles in projects, and login sessions — kept in MongoDB (ADR 0017).

Passwords are hashed with argon2id (`argon2-cffi`, memory-hard), off the event loop. Sessions are
random tokens stored as their SHA-256; every process caches a session it looked up for at most
`LEADSCORE_SESSION_CACHE` seconds, so a logout, revocation or role change reaches every process
within that time without a MongoDB read per request.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from app.access import Role, hash_secret, new_session_token
from app.mongo import Mongo
from app.settings import Settings

__all__ = ["Session", "UserExists", "UserStore", "normalize_email"]

_hasher = PasswordHasher()  # argon2id with the library's recommended (RFC 9106) parameters
# Each hash takes ~64 MiB and tens of milliseconds of a core: at most two at a time per process,
# so a burst of logins queues instead of taking the worker's memory and CPU from scoring.
_HASHING_AT_ONCE = 2
# Verified against when an e-mail is unknown, so that a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserExists(Exception):
    """A user with that e-mail already exists."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session as a request sees it: whose it is and their roles (projectId -> role)."""

    token_hash: str
    user_id: str
    email: str
    roles: dict[str, Role]
    expires_at: datetime


class UserStore:
    def __init__(self, mongo: Mongo, settings: Settings) -> None:
        self._mongo = mongo
        self._settings = settings
        self._cache: dict[str, tuple[float, Session | None]] = {}
        self._indexed = False
        self._hashing = asyncio.Semaphore(_HASHING_AT_ONCE)

    async def _argon2(self, fn: Any, *args: str) -> Any:
        """Run an argon2 call off the event loop, a bounded number at a time."""
        async with self._hashing:
            return await asyncio.to_thread(fn, *args)

    async def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        db = self._mongo.db
        await db.users.create_indexes(
            [
                IndexModel([("email", ASCENDING)], unique=True),
                IndexModel([("userId", ASCENDING)], unique=True),
                IndexModel([("roles.projectId", ASCENDING)]),
            ]
        )
        await db.sessions.create_indexes(
            [
                IndexModel([("tokenHash", ASCENDING)], unique=True),
                IndexModel([("userId", ASCENDING)]),
            ]
        )
        self._indexed = True

    # -- users -----------------------------------------------------------------------------
    async def create_user(self, email: str, password: str) -> dict[str, Any]:
        await self._ensure_indexes()
        doc = {
            "userId": "usr_" + secrets.token_hex(8),
            "email": normalize_email(email),
            "passwordHash": await self._argon2(_hasher.hash, password),
            "roles": [],
            "createdAt": datetime.now(UTC),
        }
        try:
            await self._mongo.db.users.insert_one(doc)
        except DuplicateKeyError:
            raise UserExists(email) from None
        return public_user(doc)

    async def find_user(self, email: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self._mongo.db.users.find_one(
            {"email": normalize_email(email)}
        )
        return doc

    async def set_role(
        self, email: str, project_id: str, role: Role | None
    ) -> tuple[Role | None, Role | None] | None:
        """Grant `role` in a project (None removes the user from it). Returns (before, after),
        or None when there is no such user. Written only if the roles did not change meanwhile
        (retried), so two concurrent grants cannot lose one another."""
        for _ in range(50):
            user = await self.find_user(email)
            if user is None:
                return None
            current = user.get("roles", [])
            roles = [r for r in current if r["projectId"] != project_id]
            if role is not None:
                roles.append({"projectId": project_id, "role": role})
            result = await self._mongo.db.users.update_one(
                {"userId": user["userId"], "roles": current}, {"$set": {"roles": roles}}
            )
            if result.matched_count == 1:
                self._cache.clear()  # this process sees the change at once, others within TTL
                return role_in(user, project_id), role
        raise RuntimeError(f"the roles of {email} kept changing under concurrent updates")

    async def members(self, project_id: str) -> list[dict[str, Any]]:
        cursor = self._mongo.db.users.find({"roles.projectId": project_id}).sort("email", 1)
        return [
            {"email": u["email"], "userId": u["userId"], "role": role_in(u, project_id)}
            async for u in cursor
        ]

    async def verify_password(self, email: str, password: str) -> dict[str, Any] | None:
        """The user if the password is right; None otherwise (same work for unknown e-mails)."""
        user = await self.find_user(email)
        stored = user["passwordHash"] if user is not None else _DUMMY_HASH
        try:
            await self._argon2(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    async def set_password(self, user_id: str, password: str, keep_session: str | None) -> None:
        """Change a password and end every other session of the user: whoever knew the old
        password must not stay logged in."""
        new_hash = await self._argon2(_hasher.hash, password)
        await self._mongo.db.users.update_one(
            {"userId": user_id}, {"$set": {"passwordHash": new_hash}}
        )
        await self.revoke_sessions(user_id, except_hash=keep_session)

    # -- sessions --------------------------------------------------------------------------
    async def start_session(self, user_id: str) -> tuple[str, datetime]:
        await self._ensure_indexes()
        token = new_session_token()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self._settings.session_ttl)
        await self._mongo.db.sessions.insert_one(
            {
                "tokenHash": hash_secret(token),
                "userId": user_id,
                "createdAt": now,
                "expiresAt": expires,
            }
        )
        return token, expires

    async def session(self, token: str) -> Session | None:
        """The live session of a token, from this process's short cache or MongoDB."""
        token_hash = hash_secret(token)
        now = time.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            found = await self._load_session(token_hash)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[token_hash] = (now + self._settings.session_cache_seconds, found)
        if found is None or found.expires_at <= datetime.now(UTC):
            return None
        return found

    async def _load_session(self, token_hash: str) -> Session | None:
        db = self._mongo.db
        doc = await db.sessions.find_one({"tokenHash": token_hash, "revokedAt": {"$exists": False}})
        if doc is None:
            return None
        user = await db.users.find_one({"userId": doc["userId"]})
        if user is None:
            return None
        expires = doc["expiresAt"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return Session(
            token_hash=token_hash,
            user_id=user["userId"],
            email=user["email"],
            roles={r["projectId"]: r["role"] for r in user.get("roles", [])},
            expires_at=expires,
        )

    async def revoke_session(self, token_hash: str) -> None:
        await self._mongo.db.sessions.update_one(
            {"tokenHash": token_hash}, {"$set": {"revokedAt": datetime.now(UTC)}}
        )
        self._cache.pop(token_hash, None)

    async def revoke_sessions(self, user_id: str, except_hash: str | None = None) -> int:
        query: dict[str, Any] = {"userId": user_id, "revokedAt": {"$exists": False}}
        if except_hash is not None:
            query["tokenHash"] = {"$ne": except_hash}
        result = await self._mongo.db.sessions.update_many(
            query, {"$set": {"revokedAt": datetime.now(UTC)}}
        )
        self._cache.clear()
        return int(result.modified_count)


def role_in(user: dict[str, Any], project_id: str) -> Role | None:
    for r in user.get("roles", []):
        if r["projectId"] == project_id:
            role: Role = r["role"]
            return role
    return None


def public_user(doc: dict[str, Any]) -> dict[str, Any]:
    created = doc.get("createdAt")
    return {
        "userId": doc["userId"],
        "email": doc["email"],
        "roles": doc.get("roles", []),
        "createdAt": created.isoformat() if isinstance(created, datetime) else created,
    }
