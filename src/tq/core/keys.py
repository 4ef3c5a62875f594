"""The rules of API key records: permission names, the id and secret format, validation.

Pure: the random secret and its bcrypt hash are made outside the core (``tq.broker.access``)
and arrive in a ``CreateKey`` command, as every command carries its own randomness.
"""

from __future__ import annotations

import base64
import re
from typing import Final

from tq.core.layout import ApiKey
from tq.errors import ValidationError

#: Permission classes, in the order they are shown. ``admin`` implies the other three.
PERMISSIONS: Final = ("submit", "read", "work", "admin")
#: A key id: 12 lowercase hex digits (48 random bits), public, shown by ``tq keys list``.
KEY_ID: Final = re.compile(r"[0-9a-f]{12}")
#: A presented key: ``tq_<id>_<secret>``, the secret 43 chars of urlsafe base64 (32 bytes).
KEY_FORMAT: Final = re.compile(r"tq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
MAX_NAME: Final = 200


def format_key(key_id: bytes, secret: bytes) -> str:
    """The key ``tq_<id>_<secret>`` of 6 random id bytes and 32 random secret bytes (drawn by
    the caller: the core draws nothing)."""
    if len(key_id) != 6 or len(secret) != 32:
        raise ValueError("a key is made of 6 id bytes and 32 secret bytes")
    body = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return f"tq_{key_id.hex()}_{body}"


def validate_key(key: ApiKey) -> None:
    """Raise ValidationError naming the first bad field of a key about to be created."""
    if KEY_ID.fullmatch(key.id) is None:
        raise ValidationError(f"key id must be 12 lowercase hex digits, got {key.id!r}")
    if not key.name or len(key.name) > MAX_NAME:
        raise ValidationError(f"key name must be 1..{MAX_NAME} characters, got {key.name!r}")
    if not key.permissions:
        raise ValidationError(f"a key needs at least one permission of {', '.join(PERMISSIONS)}")
    for p in key.permissions:
        if p not in PERMISSIONS:
            raise ValidationError(
                f"unknown permission {p!r}: expected one of {', '.join(PERMISSIONS)}"
            )
    if key.queues is not None and (not key.queues or not all(key.queues)):
        raise ValidationError("key queues must be non-empty names (omit them for every queue)")
    if key.expires_at is not None and key.expires_at <= key.created_at:
        raise ValidationError("a key's expiry must be after its creation")
    if key.revoked_at is not None:
        raise ValidationError("a key cannot be created revoked")
    if not key.hash:
        raise ValidationError("a key needs the hash of its secret")
    for cls, limit in (key.rate_limits or {}).items():
        if cls not in PERMISSIONS:
            raise ValidationError(
                f"rate limit for unknown permission class {cls!r}: expected one of "
                f"{', '.join(PERMISSIONS)}"
            )
        if not limit.rate > 0 or limit.burst < 1:
            raise ValidationError(
                f"rate limit for {cls} needs rate > 0 and burst >= 1, "
                f"got rate={limit.rate} burst={limit.burst}"
            )
