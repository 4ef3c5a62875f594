"""Flow control between protobuf and the service's records (``PauseQueue``, ``ResumeQueue``,
``SetLimit``, ``ClearLimit``, ``ListLimits``): a request is checked against ``LimitSpec``'s
constraints, so a bad field is INVALID_ARGUMENT naming it, as over the other doors.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import convert_checked
from tq.errors import ValidationError
from tq.protocol.records import NAME_MAX_LEN, LimitInfo, LimitSpec, QueueState

SCOPE_FROM_PB: Final[dict[int, Literal["queue", "type"]]] = {
    pb.LIMIT_SCOPE_QUEUE: "queue",
    pb.LIMIT_SCOPE_TYPE: "type",
}
SCOPE_TO_PB: Final[dict[str, pb.LimitScope]] = {
    "queue": pb.LIMIT_SCOPE_QUEUE,
    "type": pb.LIMIT_SCOPE_TYPE,
}


def scope_from_pb(scope: int) -> Literal["queue", "type"]:
    found = SCOPE_FROM_PB.get(scope)
    if found is None:
        raise ValidationError("scope: give LIMIT_SCOPE_QUEUE or LIMIT_SCOPE_TYPE")
    return found


def name_from_pb(name: str, what: str) -> str:
    """A queue or task type name: 1..NAME_MAX_LEN characters, as every door checks it."""
    if not 1 <= len(name) <= NAME_MAX_LEN:
        raise ValidationError(f"{what}: must be 1..{NAME_MAX_LEN} characters, got {len(name)}")
    return name


def limit_spec_from_pb(req: pb.SetLimitRequest) -> LimitSpec:
    fields: dict[str, Any] = {"scope": scope_from_pb(req.scope), "name": req.name}
    for name in ("rate", "burst", "concurrency"):
        if req.HasField(name):
            fields[name] = getattr(req, name)
    spec: LimitSpec = convert_checked(fields, LimitSpec, "limit")
    return spec


def limit_to_pb(x: LimitInfo) -> pb.Limit:
    return pb.Limit(
        scope=SCOPE_TO_PB[x.scope], name=x.name, rate=x.rate, burst=x.burst,
        concurrency=x.concurrency, running=x.running, tokens=x.tokens, set_at=x.set_at,
    )  # fmt: skip


def queue_state_to_pb(s: QueueState) -> pb.QueueState:
    return pb.QueueState(queue=s.queue, paused=s.paused, paused_at=s.paused_at)
