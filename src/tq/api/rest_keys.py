"""API key administration over REST, for admin keys: ``POST /v1/keys`` (answers the secret,
once: it is stored only as a bcrypt hash), ``GET /v1/keys``, ``DELETE /v1/keys/{key_id}``
(revoke: open streams of the key end at once). Thin adapters over the service's
``create_key``, ``list_keys`` and ``revoke_key``, which check the caller's permission.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from tq.api.fields import NUMBER, Name, Text
from tq.api.http_auth import Caller
from tq.api.responses import ErrorResponse, rfc3339
from tq.api.rest import Service, errors
from tq.api.rest_contract import known_query
from tq.core.keys import MAX_NAME
from tq.core.times import format_rfc3339
from tq.protocol.records import KeyInfo, KeySpec, RateSpec

#: Longest lifetime a key may be given at creation: a hundred years.
MAX_LIFETIME_S = 100 * 365 * 86_400.0
MAX_INT = 2**31 - 1
KEY_ID_PATTERN = "^[0-9a-f]{12}$"

router = APIRouter(dependencies=[Depends(known_query)])


class PermissionIn(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    WORK = "work"
    ADMIN = "admin"


class RateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    rate: Annotated[float, Field(gt=0, le=1e9), NUMBER] = Field(description="tokens per second")
    burst: Annotated[int, Field(ge=1, le=MAX_INT), NUMBER] = Field(
        description="tokens the bucket holds: calls allowed at once after a quiet spell"
    )


class KeyCreate(BaseModel):
    """A key to create: its permissions (admin implies the others), the queues it may use
    (absent: every queue), when it expires (absent: never) and its own rate limits per
    permission class (absent: the broker's auth.rate_limits)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    name: Annotated[Text, Field(min_length=1, max_length=MAX_NAME)]
    permissions: Annotated[list[PermissionIn], Field(min_length=1, max_length=4)]
    queues: Annotated[list[Name], Field(min_length=1, max_length=1000)] | None = None
    expires_in: Annotated[float, Field(ge=1, le=MAX_LIFETIME_S), NUMBER] | None = Field(
        None, description="seconds from now until the key expires (e.g. 2592000: 30 days)"
    )
    rate_limits: dict[PermissionIn, RateIn] | None = None

    def spec(self) -> KeySpec:
        return KeySpec(
            name=self.name,
            permissions=[p.value for p in self.permissions],
            queues=None if self.queues is None else list(self.queues),
            expires_at=None if self.expires_in is None else time.time() + self.expires_in,
            rate_limits=None if self.rate_limits is None else {
                k.value: RateSpec(rate=v.rate, burst=v.burst) for k, v in self.rate_limits.items()
            },
        )  # fmt: skip


class RateOut(BaseModel):
    rate: float
    burst: int


class KeyOut(BaseModel):
    """An API key as listed: never its secret, nor its hash."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="public key id: the 12 hex digits after tq_ in the secret")
    name: str
    permissions: list[str]
    queues: list[str] | None = Field(None, description="null: every queue")
    created_at: float
    created_at_rfc3339: str
    expires_at: float | None = None
    expires_at_rfc3339: str | None = None
    revoked_at: float | None = None
    revoked_at_rfc3339: str | None = None
    rate_limits: dict[str, RateOut] | None = None

    @classmethod
    def of(cls, k: KeyInfo) -> KeyOut:
        return cls(
            id=k.id, name=k.name, permissions=list(k.permissions),
            queues=None if k.queues is None else list(k.queues),
            created_at=k.created_at, created_at_rfc3339=format_rfc3339(k.created_at),
            expires_at=k.expires_at, expires_at_rfc3339=rfc3339(k.expires_at),
            revoked_at=k.revoked_at, revoked_at_rfc3339=rfc3339(k.revoked_at),
            rate_limits=None if k.rate_limits is None else {
                c: RateOut(rate=r.rate, burst=r.burst) for c, r in k.rate_limits.items()
            },
        )  # fmt: skip


class KeyCreated(BaseModel):
    key: KeyOut
    secret: str = Field(description="the API key itself: shown this once, never again")


class KeysOut(BaseModel):
    keys: list[KeyOut]


KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN, description="a key id (12 hex digits)")]


@router.post("/v1/keys", status_code=201, operation_id="create_key", responses=errors(400, 503))
async def create_key(body: KeyCreate, service: Service, who: Caller) -> KeyCreated:
    """Create an API key (admin of every queue). The answer holds its secret: the only time
    the broker shows it."""
    info, secret = await service.create_key(who, body.spec())
    return KeyCreated(key=KeyOut.of(info), secret=secret)


@router.get("/v1/keys", operation_id="list_keys", responses=errors())
async def list_keys(service: Service, who: Caller) -> KeysOut:
    """Every API key, revoked ones too, by id."""
    return KeysOut(keys=[KeyOut.of(k) for k in service.list_keys(who)])


_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no API key with that id"}
}


@router.delete(
    "/v1/keys/{key_id}", operation_id="revoke_key", responses={**_UNKNOWN, **errors(400, 503)}
)
async def revoke_key(key_id: KeyId, service: Service, who: Caller) -> KeyOut:
    """Revoke a key: refused from its next request on, its open streams ended at once.
    Revoking a revoked key answers it unchanged (the first revocation time stays)."""
    return KeyOut.of(await service.revoke_key(who, key_id))
