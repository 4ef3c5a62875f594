"""Flow control over REST: ``POST /v1/queues/{queue}/pause`` and ``/resume``; ``GET
/v1/limits``; ``PUT`` and ``DELETE`` ``/v1/limits/queues/{queue}`` (a concurrency cap) and
``/v1/limits/types/{task_type}`` (a rate limit, a cap, or both), a PUT replacing the limit.
The body schemas say exactly which limits are valid (a rate needs a task type, a burst needs
a rate), so a request the OpenAPI document accepts is never refused. Thin adapters over the
service's ``pause_queue``, ``set_limit``, ``clear_limit`` and ``limits``, which check the
caller's permission.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from tq.api.fields import NUMBER
from tq.api.http_auth import Caller
from tq.api.responses import ErrorResponse, rfc3339
from tq.api.rest import Service, errors
from tq.api.rest_contract import known_query
from tq.protocol.records import (
    MAX_LIMIT_COUNT,
    MAX_LIMIT_RATE,
    NAME_MAX_LEN,
    LimitInfo,
    LimitSpec,
    QueueState,
)

router = APIRouter(dependencies=[Depends(known_query)])


_CAP = Field(description="most tasks in progress at once, cluster-wide")
Count = Annotated[int, Field(ge=1, le=MAX_LIMIT_COUNT), NUMBER]


class CapIn(BaseModel):
    """A concurrency cap alone."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    concurrency: Count = _CAP


class RateIn(BaseModel):
    """A rate limit (a token bucket), with a concurrency cap or not."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    rate: Annotated[float, Field(gt=0, le=MAX_LIMIT_RATE), NUMBER] = Field(
        description="claims per second, on average"
    )
    burst: Count | None = Field(
        None, description="claims at once after a quiet spell (default: the rate rounded up)"
    )
    concurrency: Count | None = Field(None, description="most tasks in progress at once")


class LimitOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    scope: str
    name: str
    rate: float | None = None
    burst: int | None = None
    concurrency: int | None = None
    running: int = Field(description="its tasks in progress now")
    tokens: float | None = Field(None, description="claims its bucket allows at once now")
    set_at: float
    set_at_rfc3339: str | None = None

    @classmethod
    def of(cls, x: LimitInfo) -> LimitOut:
        return cls(
            scope=x.scope, name=x.name, rate=x.rate, burst=x.burst, concurrency=x.concurrency,
            running=x.running, tokens=x.tokens, set_at=x.set_at, set_at_rfc3339=rfc3339(x.set_at),
        )  # fmt: skip


class LimitsOut(BaseModel):
    limits: list[LimitOut]


class QueueStateOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    queue: str
    paused: bool
    paused_at: float | None = None
    paused_at_rfc3339: str | None = None

    @classmethod
    def of(cls, s: QueueState) -> QueueStateOut:
        return cls(
            queue=s.queue, paused=s.paused, paused_at=s.paused_at,
            paused_at_rfc3339=rfc3339(s.paused_at),
        )  # fmt: skip


QueueName = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LEN, description="a queue name")]
TaskType = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LEN, description="a task type")]
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "that queue or task type has no limit"}
}


@router.post("/v1/queues/{queue}/pause", operation_id="pause_queue", responses=errors(400, 503))
async def pause_queue(queue: QueueName, service: Service, who: Caller) -> QueueStateOut:
    """Pause a queue (admin of it): it takes submits and hands out nothing until resumed.
    Pausing a paused queue keeps its first pause time."""
    return QueueStateOut.of(await service.pause_queue(who, queue))


@router.post("/v1/queues/{queue}/resume", operation_id="resume_queue", responses=errors(400, 503))
async def resume_queue(queue: QueueName, service: Service, who: Caller) -> QueueStateOut:
    """Resume a queue (admin of it): its tasks are handed out again."""
    return QueueStateOut.of(await service.pause_queue(who, queue, paused=False))


@router.get("/v1/limits", operation_id="list_limits", responses=errors())
async def list_limits(service: Service, who: Caller) -> LimitsOut:
    """Every limit, queues first, with its tasks in progress and its tokens now."""
    return LimitsOut(limits=[LimitOut.of(x) for x in service.limits(who)])


@router.put("/v1/limits/queues/{queue}", operation_id="set_queue_limit", responses=errors(400, 503))
async def set_queue_limit(queue: QueueName, body: CapIn, service: Service, who: Caller) -> LimitOut:
    """Cap a queue's tasks in progress (admin of the queue), replacing its cap."""
    spec = LimitSpec(scope="queue", name=queue, concurrency=body.concurrency)
    return LimitOut.of(await service.set_limit(who, spec))


@router.put(
    "/v1/limits/types/{task_type}", operation_id="set_type_limit", responses=errors(400, 503)
)
async def set_type_limit(
    task_type: TaskType, body: RateIn | CapIn, service: Service, who: Caller
) -> LimitOut:
    """Limit a task type in every queue (admin of every queue): a rate, a cap or both,
    replacing the limit it had."""
    if isinstance(body, RateIn):
        spec = LimitSpec(
            scope="type", name=task_type, rate=body.rate, burst=body.burst,
            concurrency=body.concurrency,
        )  # fmt: skip
    else:
        spec = LimitSpec(scope="type", name=task_type, concurrency=body.concurrency)
    return LimitOut.of(await service.set_limit(who, spec))


_CLEAR: dict[str, Any] = {
    "status_code": 204,
    "response_class": Response,
    "responses": {**_UNKNOWN, **errors(400, 503)},
}


@router.delete("/v1/limits/queues/{queue}", operation_id="clear_queue_limit", **_CLEAR)
async def clear_queue_limit(queue: QueueName, service: Service, who: Caller) -> Response:
    """Remove a queue's cap."""
    await service.clear_limit(who, "queue", queue)
    return Response(status_code=204)


@router.delete("/v1/limits/types/{task_type}", operation_id="clear_type_limit", **_CLEAR)
async def clear_type_limit(task_type: TaskType, service: Service, who: Caller) -> Response:
    """Remove a task type's limit."""
    await service.clear_limit(who, "type", task_type)
    return Response(status_code=204)
