# ruff: noqa: N802  (the RPC method names are the .proto's)
"""The RPCs of ``tq.v1.TaskQueue``, each a thin adapter over ``BrokerService``.

Convert the request (``grpc_convert``), call the service, await durability where the service
hands back a future, convert the answer. A ``TqError`` becomes the gRPC status of its stable
code, with the number in trailing metadata ``tq-error-code``; anything else is logged and
answered INTERNAL (never UNKNOWN, never a traceback).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NoReturn, TypeVar

import grpc
import grpc.aio
import msgspec

from tq.api._pb import tq_pb2 as pb
from tq.api._pb import tq_pb2_grpc
from tq.api.grpc_convert import (
    MAX_LIMIT,
    list_query,
    parse_id,
    parse_ids,
    queues_to_pb,
    spec_from_pb,
    stats_to_pb,
    task_to_pb,
    workers_to_pb,
)
from tq.api.grpc_watch import Watches
from tq.broker.service import BrokerService, Durable
from tq.core.ids import TaskId, format_task_id
from tq.errors import ErrorCode, NotFoundError, TqError, ValidationError, error_for_code

log = logging.getLogger(__name__)

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["TaskQueue"].full_name
ERROR_CODE_KEY: Final = "tq-error-code"
#: Most tasks one SubmitTasks or bulk operation may name (one loop turn of work at most).
MAX_BATCH: Final = 10_000
DEFAULT_BULK_LIMIT: Final = 1000
T = TypeVar("T")
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
BulkOp = Callable[[Sequence[TaskId]], tuple[list[int], Durable]]

_NOT_DONE: Final = {  # per operation: why a task in the wrong state was left alone
    "cancel": "task {} has already finished",
    "retry": "task {} is not in dead_letter",
    "delete": "task {} is not finished; cancel it first",
}


async def _abort(context: Ctx, err: TqError) -> NoReturn:
    """End the call with ``err``'s status and code (raises, as ``context.abort`` does)."""
    if context.done():
        raise asyncio.CancelledError  # the client left: nobody to tell
    status = err.code.grpc_status
    code = grpc.StatusCode[status] if status != "OK" else grpc.StatusCode.FAILED_PRECONDITION
    await context.abort(code, str(err), trailing_metadata=((ERROR_CODE_KEY, str(int(err.code))),))


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


def _item_error(op: str, task_id: TaskId, code: int) -> TqError:
    text = format_task_id(task_id)
    if code == ErrorCode.TASK_NOT_FOUND:
        return NotFoundError(f"no task with id {text}")
    if code == ErrorCode.INVALID_STATE:
        return error_for_code(code, _NOT_DONE[op].format(text))
    try:
        return error_for_code(code, f"task {text}: {ErrorCode(code).description}")
    except ValueError:
        return error_for_code(code, f"task {text}: error {code}")


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
        reply, durable = self.service.submit([spec_from_pb(request.task)])
        await asyncio.shield(durable)  # the batch future is shared: never cancel it
        return pb.SubmitTaskResponse(id=format_task_id(reply.ids[0]), created=reply.created[0])

    @_rpc
    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Ctx
    ) -> pb.SubmitTasksResponse:
        if not 0 < len(request.tasks) <= MAX_BATCH:
            raise ValidationError(f"tasks must hold 1..{MAX_BATCH} tasks, not {len(request.tasks)}")
        specs = [spec_from_pb(s, f"tasks[{i}]") for i, s in enumerate(request.tasks)]
        reply, durable = self.service.submit(specs)
        await asyncio.shield(durable)
        return pb.SubmitTasksResponse(
            tasks=[
                pb.SubmitTaskResponse(id=format_task_id(i), created=c)
                for i, c in zip(reply.ids, reply.created, strict=True)
            ]
        )

    def _task(self, task_id: TaskId, include_payload: bool = False) -> pb.Task:
        info = self.service.status([task_id], include_payload)[0]
        if info is None:
            raise NotFoundError(f"no task with id {format_task_id(task_id)}")
        return task_to_pb(info)

    @_rpc
    async def GetTask(self, request: pb.GetTaskRequest, context: Ctx) -> pb.Task:
        return self._task(parse_id(request.id), request.include_payload)

    @_rpc
    async def ListTasks(self, request: pb.ListTasksRequest, context: Ctx) -> pb.ListTasksResponse:
        query = list_query(request.filter, request.cursor, request.limit)
        infos, cursor = self.service.list_tasks(query)
        return pb.ListTasksResponse(tasks=[task_to_pb(i) for i in infos], next_cursor=cursor or b"")

    # ------------------------------------------------------------------ change tasks

    async def _one(self, op: str, fn: BulkOp, text: str) -> TaskId:
        task_id = parse_id(text)
        codes, durable = fn([task_id])
        await asyncio.shield(durable)
        if codes[0]:
            raise _item_error(op, task_id, codes[0])
        return task_id

    @_rpc
    async def CancelTask(self, request: pb.TaskRequest, context: Ctx) -> pb.Task:
        return self._task(await self._one("cancel", self.service.cancel, request.id))

    @_rpc
    async def RetryTask(self, request: pb.TaskRequest, context: Ctx) -> pb.Task:
        return self._task(await self._one("retry", self.service.retry_dead, request.id))

    @_rpc
    async def DeleteTask(self, request: pb.TaskRequest, context: Ctx) -> pb.DeleteTaskResponse:
        task_id = await self._one("delete", self.service.delete, request.id)
        return pb.DeleteTaskResponse(id=format_task_id(task_id))

    async def _select(self, request: pb.BulkRequest) -> list[TaskId]:
        """The ids a bulk request names, or the first ``limit`` tasks its filter matches."""
        has_filter = request.HasField("filter") and bool(request.filter.ListFields())
        if request.ids:
            if has_filter:
                raise ValidationError("give ids or filter, not both")
            if len(request.ids) > MAX_BATCH:
                raise ValidationError(f"ids names {len(request.ids)} tasks; at most {MAX_BATCH}")
            return list(dict.fromkeys(parse_ids(request.ids)))
        if not has_filter:
            raise ValidationError("give ids, or a filter that sets at least one field")
        limit = request.limit or DEFAULT_BULK_LIMIT
        if limit > MAX_BATCH:
            raise ValidationError(f"limit {limit} is above {MAX_BATCH}")
        query = list_query(request.filter, b"", MAX_LIMIT)
        ids: list[TaskId] = []
        while len(ids) < limit:
            infos, cursor = self.service.list_tasks(query)
            ids += [i.id for i in infos]
            if cursor is None:
                break
            query = msgspec.structs.replace(query, cursor=cursor)
            await asyncio.sleep(0)  # a long selection must not stall the broker's other work
        return ids[:limit]

    async def _bulk(self, op: str, fn: BulkOp, request: pb.BulkRequest) -> pb.BulkResponse:
        ids = await self._select(request)
        codes, durable = fn(ids)
        await asyncio.shield(durable)
        results = [
            pb.ItemResult(id=format_task_id(i), code=c, message=_item_error(op, i, c).message)
            if c
            else pb.ItemResult(id=format_task_id(i))
            for i, c in zip(ids, codes, strict=True)
        ]
        return pb.BulkResponse(results=results, applied=codes.count(0))

    @_rpc
    async def CancelTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk("cancel", self.service.cancel, request)

    @_rpc
    async def RetryTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk("retry", self.service.retry_dead, request)

    @_rpc
    async def DeleteTasks(self, request: pb.BulkRequest, context: Ctx) -> pb.BulkResponse:
        return await self._bulk("delete", self.service.delete, request)

    # ------------------------------------------------------------------ broker state

    @_rpc
    async def GetStats(self, request: pb.GetStatsRequest, context: Ctx) -> pb.Stats:
        return stats_to_pb(self.service.stats(), time.time())

    @_rpc
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Ctx
    ) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(workers=workers_to_pb(self.service.workers()))

    @_rpc
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Ctx
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=queues_to_pb(self.service.stats().queues))

    # ------------------------------------------------------------------ streams

    @_rpc
    async def WatchTasks(self, request: pb.WatchTasksRequest, context: Ctx) -> None:
        await self.watches.tasks(request, context.write, lambda: context.send_initial_metadata(()))

    @_rpc
    async def WatchStats(self, request: pb.WatchStatsRequest, context: Ctx) -> None:
        await self.watches.stats(request, context.write)
