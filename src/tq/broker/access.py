"""Who may do what: permissions, the caller's ``Principal``, ``authorize``, and the ``KeyRing``
that turns a presented API key into a Principal without paying bcrypt on every request.

Pure of I/O except bcrypt, which runs in a thread (it is blocking, ~0.25 s at cost 12) with a
cap on concurrent verifications, so a flood of wrong keys cannot starve the event loop. A key
that verified once is remembered by an HMAC of it under a per-process random secret (never
the key itself), compared in constant time; revoking a key drops its entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

import bcrypt

from tq.core.keys import KEY_FORMAT, format_key
from tq.core.layout import ApiKey, RateLimit
from tq.core.times import format_rfc3339
from tq.errors import PermissionDeniedError, UnauthenticatedError

#: bcrypt cost of stored keys: ~0.25 s per verification here, paid once per connection.
BCRYPT_ROUNDS: Final = 12
#: Keys remembered as verified (LRU); beyond it the least recently used is verified again.
CACHE_SIZE: Final = 10_000
#: Random bytes of a key id (12 hex digits).
KEY_ID_BYTES: Final = 6
#: bcrypt verifications running at once; more wait their turn.
MAX_CONCURRENT_VERIFICATIONS: Final = 2


class Permission(StrEnum):
    """Permission classes; ``admin`` implies the other three. Rate limits are per class."""

    SUBMIT = "submit"
    READ = "read"  # status, list, stats, workers, queues, events, results
    WORK = "work"  # register, claim, report, heartbeat, progress, release
    ADMIN = "admin"  # cancel, retry, delete, purge, bulk, keys, config


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a door authenticated: an API key's rules, or ``ANYONE`` (auth disabled)."""

    key_id: str | None
    name: str
    permissions: frozenset[Permission]
    queues: frozenset[str] | None  # None: every queue
    expires_at: float | None = None
    rate_limits: Mapping[str, RateLimit] | None = None

    ANYONE: ClassVar[Principal]

    @classmethod
    def of(cls, key: ApiKey) -> Principal:
        return cls(
            key.id,
            key.name,
            frozenset(Permission(p) for p in key.permissions),
            None if key.queues is None else frozenset(key.queues),
            key.expires_at,
            key.rate_limits,
        )

    def has(self, permission: Permission) -> bool:
        return permission in self.permissions or Permission.ADMIN in self.permissions

    def may_use(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def __str__(self) -> str:
        return "anyone" if self.key_id is None else f"API key {self.key_id} ({self.name})"


Principal.ANYONE = Principal(None, "anyone", frozenset(Permission), None)


def authorize(principal: Principal, permission: Permission, queues: Iterable[str] = ()) -> None:
    """Raise PermissionDeniedError unless ``principal`` holds ``permission`` on ``queues``."""
    if not principal.has(permission):
        raise PermissionDeniedError(f"{principal} lacks the {permission} permission")
    if principal.queues is not None:
        outside = sorted({q for q in queues if q not in principal.queues})
        if outside:
            raise PermissionDeniedError(
                f"{principal} may not use queue {', '.join(outside)} "
                f"(it is limited to {', '.join(sorted(principal.queues))})"
            )


def check_current(key: ApiKey | None, key_id: str, now: float) -> ApiKey:
    """The key if it may be used at ``now``; else UnauthenticatedError saying why."""
    if key is None:
        raise UnauthenticatedError(f"unknown API key id {key_id}")
    if key.revoked_at is not None:
        raise UnauthenticatedError(
            f"API key {key_id} was revoked at {format_rfc3339(key.revoked_at, 'seconds')}"
        )
    if key.expires_at is not None and now >= key.expires_at:
        raise UnauthenticatedError(
            f"API key {key_id} expired at {format_rfc3339(key.expires_at, 'seconds')}"
        )
    return key


def hash_secret(secret: str) -> bytes:
    """The bcrypt hash stored for a new key (blocking: call it in a thread)."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))


def new_secret(key_id: str | None = None) -> str:
    """A fresh key ``tq_<id>_<secret>`` (a new random id unless given)."""
    raw_id = os.urandom(KEY_ID_BYTES) if key_id is None else bytes.fromhex(key_id)
    return format_key(raw_id, os.urandom(32))


def parse_key(presented: str | None) -> str:
    """The key id of a well-formed presented key; UnauthenticatedError otherwise."""
    if not presented:
        raise UnauthenticatedError("no API key given: this broker requires one")
    m = KEY_FORMAT.fullmatch(presented)
    if m is None:  # never echo what was presented: it may be a real secret mistyped
        raise UnauthenticatedError("malformed API key: expected tq_<12 hex digits>_<43 chars>")
    return m.group(1)


class KeyRing:
    """Verifies presented keys against the key table (``lookup``: id -> stored key)."""

    def __init__(self, lookup: Callable[[str], ApiKey | None]) -> None:
        self._lookup = lookup
        self._pepper = os.urandom(32)
        self._verified: OrderedDict[str, bytes] = OrderedDict()  # key id -> HMAC of the key
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
        #: bcrypt verifications run so far (the metric tests and operators watch).
        self.bcrypt_runs = 0

    def _digest(self, presented: str) -> bytes:
        return hmac.new(self._pepper, presented.encode(), hashlib.sha256).digest()

    async def verify(self, presented: str | None, now: float) -> Principal:
        """The Principal of a presented key, or UnauthenticatedError (missing, malformed,
        unknown, wrong, revoked, expired: each worded apart, one code)."""
        key_id = parse_key(presented)
        assert presented is not None
        check_current(self._lookup(key_id), key_id, now)
        digest = self._digest(presented)
        cached = self._verified.get(key_id)
        if cached is not None and hmac.compare_digest(cached, digest):
            self._verified.move_to_end(key_id)
        else:
            async with self._slots:
                key = check_current(self._lookup(key_id), key_id, now)
                self.bcrypt_runs += 1
                ok = await asyncio.to_thread(bcrypt.checkpw, presented.encode(), key.hash)
            if not ok:
                raise UnauthenticatedError(f"wrong secret for API key {key_id}")
            self._remember(key_id, digest)
        # Looked up again: it may have been revoked while bcrypt ran.
        return Principal.of(check_current(self._lookup(key_id), key_id, now))

    def _remember(self, key_id: str, digest: bytes) -> None:
        self._verified[key_id] = digest
        self._verified.move_to_end(key_id)
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """Drop what was remembered of a key (on revoke)."""
        self._verified.pop(key_id, None)
