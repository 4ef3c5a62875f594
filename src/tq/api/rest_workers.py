"""Worker inspect and control over REST: ``GET /v1/workers/{worker_id}`` (what it runs,
reserved and is ordered; the read permission) and the orders ``POST .../shutdown``,
``.../consume`` and ``.../stop-consuming`` (admin; answered once the order is durable). Thin
adapters over the service's ``inspect_worker`` and ``control_worker``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from tq.api.fields import Name
from tq.api.http_auth import Caller
from tq.api.responses import ErrorResponse, WorkerOut
from tq.api.rest import Service, errors
from tq.api.rest_contract import known_query
from tq.broker.control import Ordered
from tq.core.control import OrderAction
from tq.core.ids import WorkerId, format_task_id
from tq.core.times import format_rfc3339
from tq.protocol.records import NAME_MAX_LEN, WorkerOrderInfo

router = APIRouter(dependencies=[Depends(known_query)])

WorkerPath = Annotated[
    str, Path(min_length=1, max_length=NAME_MAX_LEN, description="the worker's id")
]


class OrderOut(BaseModel):
    """An order for a worker: ``seq`` its number, ``queue`` empty for a shutdown."""

    model_config = ConfigDict(frozen=True)

    seq: int
    action: str = Field(description="shutdown, consume or stop_consuming")
    queue: str
    at: float
    at_rfc3339: str

    @classmethod
    def of(cls, o: WorkerOrderInfo) -> OrderOut:
        return cls(
            seq=o.seq, action=o.action, queue=o.queue, at=o.at, at_rfc3339=format_rfc3339(o.at)
        )


class WorkerDetailOut(BaseModel):
    """One worker; ``running`` and ``reserved``: ids of the tasks it runs and of those it
    claimed and not started (as of its last heartbeat), at most 1,000 each."""

    model_config = ConfigDict(frozen=True)

    worker: WorkerOut
    running: list[str]
    reserved: list[str]
    orders: list[OrderOut] = Field(description="orders the worker has not carried out yet")


class OrderedOut(BaseModel):
    """``order``: the order given, null if it changes nothing (the worker does so already,
    or was ordered to); ``pending``: every order it has not carried out yet."""

    model_config = ConfigDict(frozen=True)

    order: OrderOut | None
    pending: list[OrderOut]

    @classmethod
    def of(cls, done: Ordered) -> OrderedOut:
        order = None if done.order is None else OrderOut.of(done.order)
        return cls(order=order, pending=[OrderOut.of(o) for o in done.pending])


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: Name


_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no worker with that id"}
}
_ORDER = {**_UNKNOWN, **errors(400, 409, 503, 504)}


@router.get("/v1/workers/{worker_id}", operation_id="inspect_worker", responses=errors(404))
async def inspect_worker(worker_id: WorkerPath, service: Service, who: Caller) -> WorkerDetailOut:
    """One worker: the tasks it runs and reserved, its queues, state and pending orders."""
    found = service.inspect_worker(who, WorkerId(worker_id))
    return WorkerDetailOut(
        worker=WorkerOut.of(found.worker),
        running=[format_task_id(i) for i in found.running],
        reserved=[format_task_id(i) for i in found.reserved],
        orders=[OrderOut.of(o) for o in found.orders],
    )


@router.post("/v1/workers/{worker_id}/shutdown", operation_id="shutdown_worker", responses=_ORDER)
async def shutdown_worker(worker_id: WorkerPath, service: Service, who: Caller) -> OrderedOut:
    """Ask the worker to stop gracefully, as SIGTERM does: it claims no more, hands back
    what it reserved, finishes what it runs (up to its shutdown timeout) and exits."""
    done = await service.control_worker(who, WorkerId(worker_id), OrderAction.SHUTDOWN)
    return OrderedOut.of(done)


@router.post("/v1/workers/{worker_id}/consume", operation_id="consume_queue", responses=_ORDER)
async def consume_queue(
    worker_id: WorkerPath, body: QueueIn, service: Service, who: Caller
) -> OrderedOut:
    """Ask the worker to claim tasks of ``queue`` too."""
    done = await service.control_worker(who, WorkerId(worker_id), OrderAction.CONSUME, body.queue)
    return OrderedOut.of(done)


@router.post(
    "/v1/workers/{worker_id}/stop-consuming", operation_id="stop_consuming", responses=_ORDER
)
async def stop_consuming(
    worker_id: WorkerPath, body: QueueIn, service: Service, who: Caller
) -> OrderedOut:
    """Ask the worker to claim no more tasks of ``queue`` (those it holds still run); 422
    for its only queue."""
    done = await service.control_worker(
        who, WorkerId(worker_id), OrderAction.STOP_CONSUMING, body.queue
    )
    return OrderedOut.of(done)
