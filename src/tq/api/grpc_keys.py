"""API keys between protobuf and the service's records (``CreateKey``, ``ListKeys``,
``RevokeKey``): a request is checked against ``KeySpec``'s constraints, so a bad field is
INVALID_ARGUMENT naming it, as over the other doors.
"""

from __future__ import annotations

import time
from typing import Any, Final

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import convert_checked
from tq.errors import ValidationError
from tq.protocol.records import KeyInfo, KeySpec

#: Longest lifetime a key may be given at creation: a hundred years (as over REST).
MAX_LIFETIME_S: Final = 100 * 365 * 86_400.0


def key_spec_from_pb(req: pb.CreateKeyRequest) -> KeySpec:
    fields: dict[str, Any] = {"name": req.name, "permissions": list(req.permissions)}
    if req.queues:
        fields["queues"] = list(req.queues)
    if req.HasField("expires_in"):
        if not 1 <= req.expires_in <= MAX_LIFETIME_S:
            raise ValidationError(
                f"expires_in: {req.expires_in:g} is outside 1..{MAX_LIFETIME_S:.0f} seconds"
            )
        fields["expires_at"] = time.time() + req.expires_in
    if req.rate_limits:
        fields["rate_limits"] = {
            k: {"rate": v.rate, "burst": v.burst} for k, v in req.rate_limits.items()
        }
    spec: KeySpec = convert_checked(fields, KeySpec, "key")
    return spec


def key_to_pb(k: KeyInfo) -> pb.ApiKey:
    out = pb.ApiKey(
        id=k.id,
        name=k.name,
        permissions=k.permissions,
        queues=k.queues or [],
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
    )
    for cls, limit in (k.rate_limits or {}).items():
        out.rate_limits[cls].rate = limit.rate
        out.rate_limits[cls].burst = limit.burst
    return out
