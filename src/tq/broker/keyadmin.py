"""Key administration for every door: create (the secret drawn and bcrypt-hashed here, outside
the core, then carried by a ``CreateKey`` command), list and revoke; and the bootstrap admin
key of a new data dir. The service checks the caller's admin permission before calling these.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from tq.broker.access import KEY_ID_BYTES, hash_secret, new_secret, parse_key
from tq.core import commands as c
from tq.core.layout import ApiKey, RateLimit
from tq.core.times import format_rfc3339
from tq.errors import UnauthenticatedError, ValidationError
from tq.protocol.records import KeyInfo, KeySpec, RateSpec

if TYPE_CHECKING:
    from tq.broker.service import BrokerService


def key_info(key: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        name=key.name,
        permissions=list(key.permissions),
        queues=None if key.queues is None else list(key.queues),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        rate_limits=None
        if key.rate_limits is None
        else {k: RateSpec(rate=v.rate, burst=v.burst) for k, v in key.rate_limits.items()},
    )


async def create(
    service: BrokerService, spec: KeySpec, secret: str | None = None
) -> tuple[KeyInfo, str]:
    """Store a new key; returns it and its secret (shown once, never stored). ``secret``: a
    given one (the bootstrap key), else a fresh one is drawn."""
    now = time.time()
    if spec.expires_at is not None and spec.expires_at <= now:
        raise ValidationError("expires_at is in the past: a key must expire after its creation")
    key_id = os.urandom(KEY_ID_BYTES).hex() if secret is None else parse_key(secret)
    if secret is None:
        secret = new_secret(key_id)
    digest = await asyncio.to_thread(hash_secret, secret)
    key = ApiKey(
        key_id,
        spec.name,
        tuple(dict.fromkeys(spec.permissions)),
        None if spec.queues is None else tuple(dict.fromkeys(spec.queues)),
        now,
        spec.expires_at,
        None,
        digest,
        None
        if spec.rate_limits is None
        else {k: RateLimit(v.rate, v.burst) for k, v in sorted(spec.rate_limits.items())},
    )
    # Applied after the await: time.time() may have moved on, the command carries ``now``.
    _, durable = service.apply(c.CreateKey(time.time(), key))
    await service.confirmed(durable)
    return key_info(key), secret


async def revoke(service: BrokerService, key_id: str) -> KeyInfo:
    """Revoke a key: its open connections and streams end now, on every door."""
    _, durable = service.apply(c.RevokeKey(time.time(), key_id))
    service.keyring.forget(key_id)
    service.limiter.forget(key_id)
    key = service.machine.key(key_id)
    assert key is not None
    assert key.revoked_at is not None
    when = format_rfc3339(key.revoked_at, "seconds")
    service.streams.revoked(key_id, UnauthenticatedError(f"API key {key_id} was revoked at {when}"))
    await service.confirmed(durable)
    return key_info(key)
