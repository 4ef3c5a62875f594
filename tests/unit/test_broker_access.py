"""Permissions, the KeyRing's verification (bcrypt once per key, then a keyed cache), and the
token buckets of rate limiting."""

from __future__ import annotations

import asyncio

import bcrypt
import pytest

from tq.broker.access import (
    KeyRing,
    Permission,
    Principal,
    authorize,
    new_secret,
)
from tq.broker.ratelimit import RateLimiter
from tq.core.keys import KEY_FORMAT, PERMISSIONS
from tq.core.layout import ApiKey, RateLimit
from tq.errors import ErrorCode, PermissionDeniedError, RateLimitedError, UnauthenticatedError

KEY_ID = "0123456789ab"
SECRET = new_secret(KEY_ID)
# Cost 4: these tests are about when bcrypt runs, not about its cost.
HASH = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4))


def stored(**kw: object) -> ApiKey:
    fields: dict[str, object] = {
        "id": KEY_ID,
        "name": "ci",
        "permissions": ("submit", "read"),
        "queues": None,
        "created_at": 0.0,
        "expires_at": None,
        "revoked_at": None,
        "hash": HASH,
    }
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


def test_permission_names_are_the_cores() -> None:
    assert tuple(Permission) == PERMISSIONS


def test_a_new_secret_has_the_documented_form() -> None:
    m = KEY_FORMAT.fullmatch(new_secret(KEY_ID))
    assert m is not None and m.group(1) == KEY_ID
    assert new_secret(KEY_ID) != new_secret(KEY_ID)


def test_admin_implies_every_permission_and_anyone_holds_all() -> None:
    admin = Principal.of(stored(permissions=("admin",)))
    for p in Permission:
        authorize(admin, p, ["q"])
        authorize(Principal.ANYONE, p, ["q"])


def test_a_missing_permission_or_queue_is_denied_naming_it() -> None:
    who = Principal.of(stored(permissions=("read",), queues=("a", "b")))
    with pytest.raises(PermissionDeniedError, match="lacks the submit permission") as e:
        authorize(who, Permission.SUBMIT, ["a"])
    assert e.value.code is ErrorCode.PERMISSION_DENIED
    with pytest.raises(PermissionDeniedError, match="may not use queue c"):
        authorize(who, Permission.READ, ["a", "c"])
    authorize(who, Permission.READ, ["a", "b"])


def verify(ring: KeyRing, presented: str | None, now: float = 1.0) -> Principal:
    return asyncio.run(ring.verify(presented, now))


def test_bcrypt_runs_once_per_key_then_the_cache_answers() -> None:
    ring = KeyRing({KEY_ID: stored()}.get)
    who = verify(ring, SECRET)
    assert who.key_id == KEY_ID and who.permissions == {Permission.SUBMIT, Permission.READ}
    for _ in range(5):
        verify(ring, SECRET)
    assert ring.bcrypt_runs == 1


@pytest.mark.parametrize(
    ("presented", "said"),
    [
        (None, "no API key given"),
        ("", "no API key given"),
        ("tq_nothex_abc", "malformed API key"),
        (f"tq_ffffffffffff_{'A' * 43}", "unknown API key id ffffffffffff"),
        (f"tq_{KEY_ID}_{'A' * 43}", f"wrong secret for API key {KEY_ID}"),
    ],
)
def test_a_bad_key_is_unauthenticated_with_its_own_wording(
    presented: str | None, said: str
) -> None:
    ring = KeyRing({KEY_ID: stored()}.get)
    with pytest.raises(UnauthenticatedError, match=said) as e:
        verify(ring, presented)
    assert e.value.code is ErrorCode.UNAUTHENTICATED
    assert SECRET not in e.value.message


def test_a_wrong_secret_is_never_cached_and_a_revoked_or_expired_key_is_refused() -> None:
    table = {KEY_ID: stored(expires_at=100.0)}
    ring = KeyRing(table.get)
    wrong = f"tq_{KEY_ID}_{'B' * 43}"
    for _ in range(2):
        with pytest.raises(UnauthenticatedError):
            verify(ring, wrong)
    assert ring.bcrypt_runs == 2
    verify(ring, SECRET)
    with pytest.raises(UnauthenticatedError, match="expired at"):
        verify(ring, SECRET, now=100.0)
    table[KEY_ID] = stored(revoked_at=50.0)
    ring.forget(KEY_ID)
    with pytest.raises(UnauthenticatedError, match="was revoked at"):
        verify(ring, SECRET)


def test_a_bucket_allows_its_burst_then_refuses_with_the_wait_until_a_token() -> None:
    limiter = RateLimiter({"submit": RateLimit(rate=2.0, burst=3)})
    who = Principal.of(stored())
    for _ in range(3):
        limiter.take(who, Permission.SUBMIT, 10.0)
    with pytest.raises(RateLimitedError) as e:
        limiter.take(who, Permission.SUBMIT, 10.0)
    assert e.value.code is ErrorCode.RATE_LIMITED
    assert e.value.retry_after == pytest.approx(0.5)
    limiter.take(who, Permission.SUBMIT, 10.5)  # a token came back after retry_after
    limiter.take(who, Permission.READ, 10.5)  # no limit for read: unlimited
    limiter.take(Principal.ANYONE, Permission.SUBMIT, 10.5)


def test_a_keys_own_limit_overrides_the_default() -> None:
    limiter = RateLimiter({"submit": RateLimit(rate=1.0, burst=1)})
    who = Principal.of(stored(rate_limits={"submit": RateLimit(rate=1.0, burst=5)}))
    for _ in range(5):
        limiter.take(who, Permission.SUBMIT, 0.0)
    with pytest.raises(RateLimitedError):
        limiter.take(who, Permission.SUBMIT, 0.0)
