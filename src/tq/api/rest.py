"""REST routes under /v1, each a thin adapter over ``BrokerService`` (plus /healthz, /readyz).

Every route runs on the broker's event loop (all are ``async def``: FastAPI would run a plain
``def`` in a thread, and the service is not thread-safe). Mutations answer only once their
batch is durable. The rules (bulk paging, per-task wording, filters) are the service's; this
module only maps JSON and HTTP statuses to and from its types (``rest_contract`` holds what
keeps the routes to their OpenAPI document beyond pydantic).
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from tq.api.fields import CURSOR_PATTERN
from tq.api.http_auth import Caller
from tq.api.responses import (
    BulkItem,
    BulkOut,
    ClusterOut,
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
    UnavailableResponse,
    WorkerOut,
    WorkersOut,
    task_id_text,
)
from tq.api.rest_contract import TASK_PATH, known_query, links
from tq.api.schemas import (
    BulkAction,
    BulkIn,
    TaskBatch,
    TaskFilter,
    TaskQuery,
    TaskSubmit,
)
from tq.broker import requests as rq
from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.core.ids import TaskId
from tq.core.model import PriorityTier
from tq.errors import ErrorCode, NotFoundError, UnavailableError, ValidationError
from tq.protocol.records import TaskInfo

_WHY = {
    400: "malformed request (e.g. body not valid JSON)",
    404: "no task with that id",
    409: "not allowed in the task's current state, or a task it names does not exist",
    413: "request body or task payload above its limit",
    422: "a parameter or field has a bad value (the message names it)",
    500: "internal or storage error",
    503: "not ready, queue full, storage unavailable (retry later), shutting down, or not the "
    "cluster's leader (NOT_LEADER: not applied; `leader` names the node to retry on)",
    504: "durability not confirmed in time",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: the given statuses plus 422 and 500, all ErrorResponse but
    503's UnavailableResponse (which may name the leader)."""
    return {
        s: {"model": UnavailableResponse if s == 503 else ErrorResponse, "description": _WHY[s]}
        for s in (*statuses, 422, 500)
    }


async def _service(request: Request) -> BrokerService:
    service: BrokerService = request.app.state.service
    return service


Service = Annotated[BrokerService, Depends(_service)]
router = APIRouter(dependencies=[Depends(known_query)])
#: /healthz and /readyz: served whenever the HTTP server runs, REST enabled or not.
health = APIRouter(dependencies=[Depends(known_query)])
_SUBMIT = errors(400, 409, 413, 503, 504)
_TASK = TASK_PATH


def _tid(task_id: UUID) -> TaskId:
    return TaskId(task_id.bytes)


@router.post(
    "/v1/tasks",
    status_code=201,
    operation_id="submit_task",
    responses={
        200: {"model": Submitted},
        201: {"links": links("$response.body#/id")},
        **_SUBMIT,
    },
)
async def submit_task(
    body: TaskSubmit, response: Response, service: Service, who: Caller
) -> Submitted:
    """Submit one task. 201: created; 200: an idempotency-key duplicate (its existing id)."""
    reply, fut = service.submit(who, [body.spec()])
    await service.confirmed(fut)
    if not reply.created[0]:
        response.status_code = 200
    return Submitted(id=task_id_text(reply.ids[0]), created=reply.created[0])


@router.post(
    "/v1/tasks/batch",
    status_code=201,
    operation_id="submit_tasks",
    responses={201: {"links": links("$response.body#/tasks/0/id")}, **_SUBMIT},
)
async def submit_tasks(body: TaskBatch, service: Service, who: Caller) -> SubmittedBatch:
    """Submit up to 1000 tasks as one command: one bad task refuses the whole batch."""
    reply, fut = service.submit(who, [t.spec() for t in body.tasks])
    await service.confirmed(fut)
    return SubmittedBatch(
        tasks=[
            Submitted(id=task_id_text(i), created=c)
            for i, c in zip(reply.ids, reply.created, strict=True)
        ]
    )


@router.get(_TASK, operation_id="get_task", responses=errors(404))
async def get_task(
    task_id: UUID, service: Service, who: Caller, include_payload: bool = False
) -> TaskOut:
    return TaskOut.of(_info(service, who, _tid(task_id), include_payload))


def _info_of(info: TaskInfo | None) -> TaskInfo:
    if info is None:  # purged between the change and this read: rare, but not a crash
        raise NotFoundError("the task is gone (deleted or purged by retention)")
    return info


def _info(
    service: BrokerService, who: Principal, task_id: TaskId, include_payload: bool = False
) -> TaskInfo:
    info = service.status(who, [task_id], include_payload)[0]
    if info is None:
        raise NotFoundError(f"no task with id {task_id_text(task_id)}")
    return info


@router.get("/v1/tasks", operation_id="list_tasks", responses=errors())
async def list_tasks(
    query: Annotated[TaskQuery, Query()], service: Service, who: Caller
) -> TaskPage:
    """Tasks in id (= creation) order. A page may hold fewer than ``limit`` tasks while
    ``next_cursor`` is set (the scan per call is bounded): follow it until it is null."""
    req = rq.ListQuery(task_filter(query), _decode_cursor(query.cursor), query.limit)
    infos, cursor = service.list_tasks(who, req)
    next_cursor = None if cursor is None else base64.urlsafe_b64encode(cursor).decode()
    return TaskPage(tasks=[TaskOut.of(i) for i in infos], next_cursor=next_cursor)


def task_filter(f: TaskFilter | TaskQuery) -> rq.TaskFilter:
    """The service's filter of a JSON one (a tier intersects priority_min/max)."""
    return rq.TaskFilter.build(
        state=f.state, queue=f.queue, task_type=f.task_type,
        tier=None if f.priority is None else PriorityTier[f.priority.name],
        priority_min=f.priority_min, priority_max=f.priority_max,
        created_after=f.created_after, created_before=f.created_before,
    )  # fmt: skip


def _decode_cursor(text: str | None) -> bytes | None:
    """The bytes of a ``next_cursor`` (URL-safe base64 of 1 to 64 bytes, padding optional)."""
    if text is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, text):
        raise ValidationError(f"cursor {text[:60]!r} is not a next_cursor value")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@router.post("/v1/tasks/bulk/{action}", operation_id="bulk", responses=errors(400, 413, 503, 504))
async def bulk(action: BulkAction, body: BulkIn, service: Service, who: Caller) -> BulkOut:
    """Cancel, retry (from dead letter) or delete by ids or by filter; a result per id."""
    act = rq.Action(action.value)
    if body.ids is not None:
        result = await service.act(who, act, [_tid(i) for i in body.ids])
    else:
        assert body.filter is not None
        result = await service.act_on_filter(
            who, act, task_filter(body.filter), body.limit, _decode_cursor(body.cursor)
        )
    items = [
        BulkItem(
            id=task_id_text(r.task_id), ok=r.ok,
            error=None if r.ok else ErrorBody.of(ErrorCode(r.code), r.message),
        )
        for r in result.results
    ]  # fmt: skip
    cursor = result.next_cursor
    return BulkOut(
        results=items, succeeded=result.applied, failed=len(items) - result.applied,
        truncated=result.truncated,
        next_cursor=None if cursor is None else base64.urlsafe_b64encode(cursor).decode(),
    )  # fmt: skip


_ONE = errors(404, 409, 503, 504)


@router.post(f"{_TASK}/cancel", operation_id="cancel_task", responses=_ONE)
async def cancel_task(task_id: UUID, service: Service, who: Caller) -> TaskOut:
    """Cancel a pending, scheduled, running or failed task (409 once it has finished)."""
    return TaskOut.of(_info_of(await service.act_one(who, rq.Action.CANCEL, _tid(task_id))))


@router.post(f"{_TASK}/retry", operation_id="retry_task", responses=_ONE)
async def retry_task(task_id: UUID, service: Service, who: Caller) -> TaskOut:
    """Requeue a dead-lettered task (409 if it is not in dead letter)."""
    return TaskOut.of(_info_of(await service.act_one(who, rq.Action.RETRY, _tid(task_id))))


@router.delete(
    _TASK, status_code=204, response_class=Response, operation_id="delete_task", responses=_ONE
)
async def delete_task(task_id: UUID, service: Service, who: Caller) -> Response:
    """Delete a finished task (completed, cancelled, dead letter); 409 if it is live."""
    await service.act_one(who, rq.Action.DELETE, _tid(task_id))
    return Response(status_code=204)


# ---------------------------------------------------------------------- broker state


@router.get("/v1/stats", operation_id="stats", responses=errors())
async def stats(service: Service, who: Caller) -> StatsOut:
    return StatsOut.of(service.stats(who))


@router.get("/v1/cluster", operation_id="cluster", responses=errors())
async def cluster(service: Service, who: Caller) -> ClusterOut:
    """Nodes, leader, epoch, applied index and lag, as this node last read them."""
    return ClusterOut.of(service.cluster_status(who))


@router.get("/v1/workers", operation_id="workers", responses=errors())
async def workers(service: Service, who: Caller) -> WorkersOut:
    return WorkersOut(workers=[WorkerOut.of(w) for w in service.workers(who)])


@router.get("/v1/queues", operation_id="queues", responses=errors())
async def queues(service: Service, who: Caller) -> QueuesOut:
    """Depth of every queue: pending per priority tier, scheduled and running; whether it
    is paused (a paused queue is listed even when empty)."""
    out = [
        QueueOut(
            name=name, high=q.high, normal=q.normal, low=q.low, pending=q.high + q.normal + q.low,
            scheduled=q.scheduled, in_progress=q.in_progress, paused=q.paused,
        )
        for name, q in sorted(service.stats(who).queues.items())
    ]  # fmt: skip
    return QueuesOut(queues=out)


@health.get("/healthz", operation_id="healthz", responses=errors())
async def healthz() -> Status:
    """Liveness: the broker's loop answers."""
    return Status(status="ok")


@health.get("/readyz", operation_id="readyz", responses=errors(503))
async def readyz(request: Request, service: Service) -> Status:
    """Readiness: storage healthy and not stopping (503 otherwise)."""
    if request.app.state.stopping:
        raise UnavailableError("the broker is stopping")
    if not service.ready():
        raise UnavailableError(f"not ready: storage failed ({service.failed})")
    return Status(status="ready")
