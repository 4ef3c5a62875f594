# ruff: noqa: N802  (the RPC method names are the .proto's)
"""The RPCs of ``tq.v1.TaskQueue``, each a thin adapter over ``BrokerService``.

Convert the request (``grpc_convert``), call the service, await durability where the service
hands back a future, convert the answer. Rules (bulk selection, per-task wording) are the
service's. A ``TqError`` becomes the gRPC status of its stable
code, with the number in trailing metadata ``tq-error-code``; anything else is logged and
answered INTERNAL (never UNKNOWN, never a traceback).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, TypeVar

import grpc
import grpc.aio

from tq.api._pb import tq_pb2 as pb
from tq.api._pb import tq_pb2_grpc
from tq.api.grpc_convert import (
    list_query,
    parse_id,
    parse_ids,
    queues_to_pb,
    spec_from_pb,
    stats_to_pb,
    task_filter,
    task_to_pb,
    workers_to_pb,
)
from tq.api.grpc_watch import Watches
from tq.broker.access import Principal
from tq.broker.requests import DEFAULT_BULK_LIMIT, MAX_BULK, Action
from tq.broker.service import BrokerService
from tq.core.ids import TaskId, format_task_id
from tq.errors import NotFoundError, TqError, ValidationError

#: The caller of every request. This door verifies no API key yet: with auth.enabled the
#: broker refuses to start while it runs (tq.broker.server), and the service refuses ANYONE.
ANYONE = Principal.ANYONE

log = logging.getLogger(__name__)

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["TaskQueue"].full_name
ERROR_CODE_KEY: Final = "tq-error-code"
#: Most tasks one SubmitTasks may name (one loop turn of work at most).
MAX_BATCH: Final = MAX_BULK
T = TypeVar("T")
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Ctx, err: TqError) -> NoReturn:
    """End the call with ``err``'s status and code (raises, as ``context.abort`` does). The
    details are the message alone, as every door words it; the code travels as the status
    and in the ``tq-error-code`` trailer."""
    if context.done():
        raise asyncio.CancelledError  # the client left: nobody to tell
    status = err.code.grpc_status
    code = grpc.StatusCode[status] if status != "OK" else grpc.StatusCode.FAILED_PRECONDITION
    await context.abort(
        code, err.message, trailing_metadata=((ERROR_CODE_KEY, str(int(err.code))),)
    )


async def _guard(context: Ctx, method: str, call: Awaitable[T]) -> T:
    """Await ``call``; a TqError becomes its status, any other error INTERNAL (logged)."""
    try:
        return await call
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except TqError as e:
        err = e
    except Exception as e:  # a bug must cost one call, never the broker
        log.exception("grpc.crashed method=%s", method)
        err = TqError(f"internal error: {type(e).__name__}")
    await _abort(context, err)


def _rpc(fn: Callable[[S, Req, Ctx], Awaitable[Resp]]) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """An RPC method whose errors become statuses (see ``_guard``)."""

    @functools.wraps(fn)
    async def method(self: S, request: Req, context: Ctx) -> Resp:
        return await _guard(context, fn.__name__, fn(self, request, context))

    return method


class TaskQueueService(tq_pb2_grpc.TaskQueueServicer):
    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self.watches = Watches(service)

    # ------------------------------------------------------------------ submit and read

    @_rpc
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Ctx
    ) -> pb.SubmitTaskResponse:
        reply, durable = self.service.submit(ANYONE, [spec_from_pb(request.task)])
        await self.service.confirmed(durable)
        return pb.SubmitTaskResponse(id=format_task_id(reply.ids[0]), created=reply.created[0])

    @_rpc
    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Ctx
    ) -> pb.SubmitTasksResponse:
        if not 0 < len(request.tasks) <= MAX_BATCH:
            raise ValidationError(f"tasks must hold 1..{MAX_BATCH} tasks, not {len(request.tasks)}")
        specs = [spec_from_pb(s, f"tasks[{i}]") for i, s in enumerate(request.tasks)]
        reply, durable = self.service.submit(ANYONE, specs)
        await self.service.confirmed(durable)
        return pb.SubmitTasksResponse(
            tasks=[
                pb.SubmitTaskResponse(id=format_task_id(i), created=c)
                for i, c in zip(reply.ids, reply.created, strict=True)
            ]
        )

    def _task(self, task_id: TaskId, include_payload: bool = False) -> pb.Task:
        info = self.service.status(ANYONE, [task_id], include_payload)[0]
        if info is None:
            raise NotFoundError(f"no task with id {format_task_id(task_id)}")
        return task_to_pb(info)

    @_rpc
    async def GetTask(self, request: pb.GetTaskRequest, context: Ctx) -> pb.Task:
        return self._task(parse_id(request.id), request.include_payload)

    @_rpc
    async def ListTasks(self, request: pb.ListTasksRequest, context: Ctx) -> pb.ListTasksResponse:
        query = list_query(request.filter, request.cursor, request.limit)
        infos, cursor = self.service.list_tasks(ANYONE, query)
        return pb.ListTasksResponse(tasks=[task_to_pb(i) for i in infos], next_cursor=cursor or b"")

    # ------------------------------------------------------------------ change tasks

    async def _one(self, action: Action, text: str) -> pb.Task:
        info = await self.service.act_one(ANYONE, action, parse_id(text))
        if info is None:
            raise NotFoundError(f"task {text} is gone (deleted or purged by retention)")
        return task_to_pb(info)

    @_rpc
    async def CancelTask(self, request: pb.TaskRequest, context: Ctx) -> pb.Task:
        return await self._one(Action.CANCEL, request.id)

    @_rpc
    async def RetryTask(self, request: pb.TaskRequest, context: Ctx) -> pb.Task:
        return await self._one(Action.RETRY, request.id)

    @_rpc
    async def DeleteTask(self, request: pb.TaskRequest, context: Ctx) -> pb.DeleteTaskResponse:
        task_id = parse_id(request.id)
        await self.service.act_one(ANYONE, Action.DELETE, task_id)
        return pb.DeleteTaskResponse(id=format_task_id(task_id))

    async def _bulk(self, action: Action, request: pb.BulkRequest) -> pb.BulkResponse:
        """The ids a bulk request names, or the first ``limit`` tasks its filter selects."""
        has_filter = request.HasField("filter") and bool(request.filter.ListFields())
        if request.ids:
            if has_filter:
                raise ValidationError("give ids or filter, not both")
            if len(request.ids) > MAX_BULK:
                raise ValidationError(f"ids names {len(request.ids)} tasks; at most {MAX_BULK}")
            result = await self.service.act(ANYONE, action, parse_ids(request.ids))
        elif has_filter:
            limit = request.limit or DEFAULT_BULK_LIMIT
            result = await self.service.act_on_filter(
                ANYONE, action, task_filter(request.filter), limit
            )
        else:
            raise ValidationError("give ids, or a filter that sets at least one field")
        items = [
            pb.ItemResult(id=format_task_id(r.task_id), code=r.code, message=r.message)
            for r in result.results
        ]
        return pb.BulkResponse(results=items, applied=result.applied, truncated=result.truncated)

    @_rpc
    async def CancelTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk(Action.CANCEL, request)

    @_rpc
    async def RetryTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk(Action.RETRY, request)

    @_rpc
    async def DeleteTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk(Action.DELETE, request)

    # ------------------------------------------------------------------ broker state

    @_rpc
    async def GetStats(self, request: pb.GetStatsRequest, context: Ctx) -> pb.Stats:
        return stats_to_pb(self.service.stats(ANYONE), time.time())

    @_rpc
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Ctx
    ) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(workers=workers_to_pb(self.service.workers(ANYONE)))

    @_rpc
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Ctx
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=queues_to_pb(self.service.stats(ANYONE).queues))

    # ------------------------------------------------------------------ streams

    @_rpc
    async def WatchTasks(self, request: pb.WatchTasksRequest, context: Ctx) -> None:
        await self.watches.tasks(request, context.write, lambda: context.send_initial_metadata(()))

    @_rpc
    async def WatchStats(self, request: pb.WatchStatsRequest, context: Ctx) -> None:
        await self.watches.stats(request, context.write)
