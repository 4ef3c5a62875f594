"""REST routes under /v1, each a thin adapter over ``BrokerService`` (plus /healthz, /readyz).

Every route runs on the broker's event loop (all are ``async def``: FastAPI would run a plain
``def`` in a thread, and the service is not thread-safe). Mutations answer only once their
batch is durable. Bulk operations by filter page through ``list_tasks``, yielding to the loop
between pages, so a large bulk call never stalls the TCP path for long.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from tq.api.responses import (
    BulkItem,
    BulkOut,
    ErrorBody,
    ErrorResponse,
    QueueOut,
    QueuesOut,
    StatsOut,
    Status,
    Submitted,
    SubmittedBatch,
    TaskOut,
    TaskPage,
    WorkerOut,
    WorkersOut,
    task_id_text,
)
from tq.api.schemas import BulkAction, BulkIn, TaskBatch, TaskFilter, TaskQuery, TaskSubmit
from tq.broker.service import BrokerService, Durable
from tq.core.ids import TaskId
from tq.errors import ErrorCode, NotFoundError, UnavailableError, ValidationError, error_for_code
from tq.protocol.messages import ListTasks
from tq.protocol.records import TaskInfo

DURABLE_TIMEOUT_S = 30.0
CHUNK = 1000  #: ids per service call in a bulk operation
MAX_PAGES = 100  #: listing pages a bulk-by-filter call scans before answering truncated

_WHY = {
    400: "malformed request (e.g. body not valid JSON)",
    404: "no task with that id",
    409: "not allowed in the task's current state",
    413: "request body or task payload above its limit",
    422: "a parameter or field has a bad value (the message names it)",
    500: "internal or storage error",
    503: "not ready, queue full or shutting down",
    504: "durability not confirmed in time",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: the given statuses plus 422 and 500, all ErrorResponse."""
    return {s: {"model": ErrorResponse, "description": _WHY[s]} for s in (*statuses, 422, 500)}


async def _service(request: Request) -> BrokerService:
    service: BrokerService = request.app.state.service
    return service


Service = Annotated[BrokerService, Depends(_service)]
router = APIRouter()
#: /healthz and /readyz: served whenever the HTTP server runs, REST enabled or not.
health = APIRouter()
_SUBMIT = errors(400, 409, 413, 503, 504)


async def durable(fut: Durable) -> None:
    """Wait for a batch to be durable; shielded, as that future is shared by the batch."""
    try:
        async with asyncio.timeout(DURABLE_TIMEOUT_S):
            await asyncio.shield(fut)
    except TimeoutError:
        raise UnavailableError(
            f"not confirmed durable within {DURABLE_TIMEOUT_S:g} s (it may still be applied)",
            ErrorCode.TIMEOUT,
        ) from None


def _tid(task_id: UUID) -> TaskId:
    return TaskId(task_id.bytes)


@router.post("/v1/tasks", status_code=201, responses={200: {"model": Submitted}, **_SUBMIT})
async def submit_task(body: TaskSubmit, response: Response, service: Service) -> Submitted:
    """Submit one task. 201: created; 200: an idempotency-key duplicate (its existing id)."""
    reply, fut = service.submit([body.spec()])
    await durable(fut)
    if not reply.created[0]:
        response.status_code = 200
    return Submitted(id=task_id_text(reply.ids[0]), created=reply.created[0])


@router.post("/v1/tasks/batch", status_code=201, responses=_SUBMIT)
async def submit_tasks(body: TaskBatch, service: Service) -> SubmittedBatch:
    """Submit up to 1000 tasks as one command: one bad task refuses the whole batch."""
    reply, fut = service.submit([t.spec() for t in body.tasks])
    await durable(fut)
    return SubmittedBatch(
        tasks=[
            Submitted(id=task_id_text(i), created=c)
            for i, c in zip(reply.ids, reply.created, strict=True)
        ]
    )


@router.get("/v1/tasks/{task_id}", responses=errors(404))
async def get_task(task_id: UUID, service: Service, include_payload: bool = False) -> TaskOut:
    return TaskOut.of(_info(service, _tid(task_id), include_payload))


def _info(service: BrokerService, task_id: TaskId, include_payload: bool = False) -> TaskInfo:
    info = service.status([task_id], include_payload)[0]
    if info is None:
        raise NotFoundError(f"no task with id {task_id_text(task_id)}")
    return info


@router.get("/v1/tasks", responses=errors())
async def list_tasks(query: Annotated[TaskQuery, Query()], service: Service) -> TaskPage:
    """Tasks in id (= creation) order. A page may hold fewer than ``limit`` tasks while
    ``next_cursor`` is set (the scan per call is bounded): follow it until it is null."""
    req = _list_request(query, _decode_cursor(query.cursor), query.limit)
    if req is None:
        return TaskPage(tasks=[], next_cursor=None)
    infos, cursor = service.list_tasks(req)
    next_cursor = None if cursor is None else base64.urlsafe_b64encode(cursor).decode()
    return TaskPage(tasks=[TaskOut.of(i) for i in infos], next_cursor=next_cursor)


def _list_request(f: TaskFilter | TaskQuery, cursor: bytes | None, limit: int) -> ListTasks | None:
    """The service query of a filter; None when it can match nothing (empty priority range)."""
    low, high = f.priority.bounds if f.priority is not None else (0, 255)
    low = max(low, f.priority_min if f.priority_min is not None else 0)
    high = min(high, f.priority_max if f.priority_max is not None else 255)
    if low > high:
        return None
    return ListTasks(
        request_id=0, state=f.state, queue=f.queue, task_type=f.task_type,
        priority_min=low or None, priority_max=None if high == 255 else high,
        created_after=f.created_after, created_before=f.created_before,
        cursor=cursor, limit=limit,
    )  # fmt: skip


def _decode_cursor(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if not raw or len(raw) > 64:
        raise ValidationError(f"cursor {text[:60]!r} is not a next_cursor value")
    return raw


def _raise_for(code: int, service: BrokerService, task_id: TaskId, action: str) -> None:
    if code == 0:
        return
    text = task_id_text(task_id)
    if code == ErrorCode.TASK_NOT_FOUND:
        raise NotFoundError(f"no task with id {text}")
    info = service.status([task_id], False)[0]
    state = f" (it is {info.state})" if info is not None else ""
    raise error_for_code(code, f"cannot {action} task {text}{state}: {ErrorCode(code).description}")


# Registered before /v1/tasks/{task_id}/...: routes match in order, and "bulk" is no id.
@router.post("/v1/tasks/bulk/{action}", responses=errors(400, 413, 503, 504))
async def bulk(action: BulkAction, body: BulkIn, service: Service) -> BulkOut:
    """Cancel, retry (from dead letter) or delete by ids or by filter; a result per id."""
    if body.ids is not None:
        ids, truncated = list(dict.fromkeys(_tid(i) for i in body.ids)), False
    else:
        assert body.filter is not None
        ids, truncated = await _resolve(service, body.filter, body.limit)
    op: Callable[[Sequence[TaskId]], tuple[list[int], Durable]] = {
        BulkAction.CANCEL: service.cancel,
        BulkAction.RETRY: service.retry_dead,
        BulkAction.DELETE: service.delete,
    }[action]
    codes: list[int] = []
    futs: list[Durable] = []
    for start in range(0, len(ids), CHUNK):
        if start:
            await asyncio.sleep(0)  # let the TCP path in between chunks
        chunk_codes, fut = op(ids[start : start + CHUNK])
        codes += chunk_codes
        futs.append(fut)
    for fut in dict.fromkeys(futs):
        await durable(fut)
    results = [
        BulkItem(id=task_id_text(i), ok=c == 0, error=ErrorBody.of(ErrorCode(c)) if c else None)
        for i, c in zip(ids, codes, strict=True)
    ]
    ok = sum(r.ok for r in results)
    return BulkOut(results=results, succeeded=ok, failed=len(results) - ok, truncated=truncated)


async def _resolve(service: BrokerService, f: TaskFilter, limit: int) -> tuple[list[TaskId], bool]:
    """Ids matching ``f``, at most ``limit``; True if more may match."""
    ids: list[TaskId] = []
    cursor: bytes | None = None
    for page in range(MAX_PAGES):
        if page:
            await asyncio.sleep(0)
        req = _list_request(f, cursor, min(1000, limit - len(ids)))
        if req is None:
            return [], False
        infos, cursor = service.list_tasks(req)
        ids += [TaskId(i.id) for i in infos]
        if cursor is None:
            return ids, False
        if len(ids) >= limit:
            return ids, True
    return ids, True


_ONE = errors(404, 409, 503, 504)


@router.post("/v1/tasks/{task_id}/cancel", responses=_ONE)
async def cancel_task(task_id: UUID, service: Service) -> TaskOut:
    """Cancel a pending, scheduled, running or failed task (409 once it has finished)."""
    tid = _tid(task_id)
    codes, fut = service.cancel([tid])
    _raise_for(codes[0], service, tid, "cancel")
    await durable(fut)
    return TaskOut.of(_info(service, tid))


@router.post("/v1/tasks/{task_id}/retry", responses=_ONE)
async def retry_task(task_id: UUID, service: Service) -> TaskOut:
    """Requeue a dead-lettered task (409 if it is not in dead letter)."""
    tid = _tid(task_id)
    codes, fut = service.retry_dead([tid])
    _raise_for(codes[0], service, tid, "retry")
    await durable(fut)
    return TaskOut.of(_info(service, tid))


@router.delete("/v1/tasks/{task_id}", status_code=204, response_class=Response, responses=_ONE)
async def delete_task(task_id: UUID, service: Service) -> Response:
    """Delete a finished task (completed, cancelled, dead letter); 409 if it is live."""
    tid = _tid(task_id)
    codes, fut = service.delete([tid])
    _raise_for(codes[0], service, tid, "delete")
    await durable(fut)
    return Response(status_code=204)


# ---------------------------------------------------------------------- broker state


@router.get("/v1/stats", responses=errors())
async def stats(service: Service) -> StatsOut:
    return StatsOut.of(service.stats())


@router.get("/v1/workers", responses=errors())
async def workers(service: Service) -> WorkersOut:
    return WorkersOut(workers=[WorkerOut.of(w) for w in service.workers()])


@router.get("/v1/queues", responses=errors())
async def queues(service: Service) -> QueuesOut:
    """Depth of every queue: pending per priority tier, scheduled and running."""
    out = [
        QueueOut(
            name=name, high=q.high, normal=q.normal, low=q.low, pending=q.high + q.normal + q.low,
            scheduled=q.scheduled, in_progress=q.in_progress,
        )
        for name, q in sorted(service.stats().queues.items())
    ]  # fmt: skip
    return QueuesOut(queues=out)


@health.get("/healthz", responses=errors())
async def healthz() -> Status:
    """Liveness: the broker's loop answers."""
    return Status(status="ok")


@health.get("/readyz", responses=errors(503))
async def readyz(request: Request, service: Service) -> Status:
    """Readiness: storage healthy and not stopping (503 otherwise)."""
    if request.app.state.stopping:
        raise UnavailableError("the broker is stopping")
    if not service.ready():
        raise UnavailableError(f"not ready: storage failed ({service.failed})")
    return Status(status="ready")
