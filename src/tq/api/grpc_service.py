# ruff: noqa: N802  (the RPC method names are the .proto's)
"""The RPCs of ``tq.v1.TaskQueue``, each a thin adapter over ``BrokerService``.

Convert the request (``grpc_convert``), call the service, await durability where the service
hands back a future, convert the answer. Rules (bulk selection, per-task wording) are the
service's. A ``TqError`` becomes the gRPC status of its stable code, with the number in
trailing metadata ``tq-error-code`` (and, when rate limited, the seconds to wait in
``retry-after``; when this node is not the leader, UNAVAILABLE with the leader's
``host:port`` in ``tq-leader``, absent while none is known); anything else is logged and
answered INTERNAL (never UNKNOWN, never a traceback). The caller is authenticated by the
service from the call's metadata (``authorization: Bearer <key>`` or ``x-api-key``) before
the RPC runs, once per call or stream (``tq.api.credentials``); health and reflection are
other services: open.
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
from tq.api.credentials import presented_key
from tq.api.grpc_convert import (
    cluster_to_pb,
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
from tq.api.grpc_flow import (
    limit_spec_from_pb,
    limit_to_pb,
    name_from_pb,
    queue_state_to_pb,
    scope_from_pb,
)
from tq.api.grpc_keys import key_spec_from_pb, key_to_pb
from tq.api.grpc_schedules import schedule_spec_from_pb, schedule_to_pb
from tq.api.grpc_watch import Watches
from tq.api.grpc_workers import detail_to_pb, ordered_to_pb
from tq.broker.access import Principal
from tq.broker.requests import DEFAULT_BULK_LIMIT, MAX_BULK, Action
from tq.broker.service import BrokerService
from tq.core.control import OrderAction
from tq.core.ids import TaskId, WorkerId, format_task_id
from tq.errors import NotFoundError, NotLeaderError, RateLimitedError, TqError, ValidationError

log = logging.getLogger(__name__)

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["TaskQueue"].full_name
ERROR_CODE_KEY: Final = "tq-error-code"
RETRY_AFTER_KEY: Final = "retry-after"
LEADER_KEY: Final = "tq-leader"
#: Most tasks one SubmitTasks may name (one loop turn of work at most).
MAX_BATCH: Final = MAX_BULK
T = TypeVar("T")
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
    trailers: tuple[tuple[str, str], ...] = ((ERROR_CODE_KEY, str(int(err.code))),)
    if isinstance(err, RateLimitedError) and err.retry_after is not None:
        trailers += ((RETRY_AFTER_KEY, f"{err.retry_after:.3f}"),)
    if isinstance(err, NotLeaderError) and err.leader is not None:
        trailers += ((LEADER_KEY, err.leader),)
    await context.abort(code, err.message, trailing_metadata=trailers)


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


def caller_key(context: Ctx) -> str | None:
    """The API key in the call's metadata (gRPC lower-cases metadata names)."""
    metadata: dict[str, str] = {}
    for name, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            metadata.setdefault(name, value)
    return presented_key(metadata.get)


def _rpc(
    fn: Callable[[TaskQueueService, Req, Ctx, Principal], Awaitable[Resp]],
) -> Callable[[TaskQueueService, Req, Ctx], Awaitable[Resp]]:
    """An RPC method of an authenticated caller, whose errors become statuses (``_guard``)."""

    @functools.wraps(fn)
    async def method(self: TaskQueueService, request: Req, context: Ctx) -> Resp:
        async def call() -> Resp:
            who = await self.service.authenticate(caller_key(context))
            return await fn(self, request, context, who)

        return await _guard(context, fn.__name__, call())

    return method


class TaskQueueService(tq_pb2_grpc.TaskQueueServicer):
    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self.watches = Watches(service)

    # ------------------------------------------------------------------ submit and read

    @_rpc
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Ctx, who: Principal
    ) -> pb.SubmitTaskResponse:
        reply, durable = self.service.submit(who, [spec_from_pb(request.task)])
        await self.service.confirmed(durable)
        return pb.SubmitTaskResponse(id=format_task_id(reply.ids[0]), created=reply.created[0])

    @_rpc
    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Ctx, who: Principal
    ) -> pb.SubmitTasksResponse:
        if not 0 < len(request.tasks) <= MAX_BATCH:
            raise ValidationError(f"tasks must hold 1..{MAX_BATCH} tasks, not {len(request.tasks)}")
        specs = [spec_from_pb(s, f"tasks[{i}]") for i, s in enumerate(request.tasks)]
        reply, durable = self.service.submit(who, specs)
        await self.service.confirmed(durable)
        return pb.SubmitTasksResponse(
            tasks=[
                pb.SubmitTaskResponse(id=format_task_id(i), created=c)
                for i, c in zip(reply.ids, reply.created, strict=True)
            ]
        )

    def _task(self, who: Principal, task_id: TaskId, include_payload: bool = False) -> pb.Task:
        info = self.service.status(who, [task_id], include_payload)[0]
        if info is None:
            raise NotFoundError(f"no task with id {format_task_id(task_id)}")
        return task_to_pb(info)

    @_rpc
    async def GetTask(self, request: pb.GetTaskRequest, context: Ctx, who: Principal) -> pb.Task:
        return self._task(who, parse_id(request.id), request.include_payload)

    @_rpc
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Ctx, who: Principal
    ) -> pb.ListTasksResponse:
        query = list_query(request.filter, request.cursor, request.limit)
        infos, cursor = self.service.list_tasks(who, query)
        return pb.ListTasksResponse(tasks=[task_to_pb(i) for i in infos], next_cursor=cursor or b"")

    # ------------------------------------------------------------------ change tasks

    async def _one(self, who: Principal, action: Action, text: str) -> pb.Task:
        info = await self.service.act_one(who, action, parse_id(text))
        if info is None:
            raise NotFoundError(f"task {text} is gone (deleted or purged by retention)")
        return task_to_pb(info)

    @_rpc
    async def CancelTask(self, request: pb.TaskRequest, context: Ctx, who: Principal) -> pb.Task:
        return await self._one(who, Action.CANCEL, request.id)

    @_rpc
    async def RetryTask(self, request: pb.TaskRequest, context: Ctx, who: Principal) -> pb.Task:
        return await self._one(who, Action.RETRY, request.id)

    @_rpc
    async def DeleteTask(
        self, request: pb.TaskRequest, context: Ctx, who: Principal
    ) -> pb.DeleteTaskResponse:
        task_id = parse_id(request.id)
        await self.service.act_one(who, Action.DELETE, task_id)
        return pb.DeleteTaskResponse(id=format_task_id(task_id))

    async def _bulk(
        self, who: Principal, action: Action, request: pb.BulkRequest
    ) -> pb.BulkResponse:
        """The ids a bulk request names, or the first ``limit`` tasks its filter selects."""
        has_filter = request.HasField("filter") and bool(request.filter.ListFields())
        if request.cursor and not has_filter:
            raise ValidationError("cursor goes with filter (the next_cursor of a call by filter)")
        if len(request.cursor) > 64:
            raise ValidationError("cursor is not a next_cursor value")
        if request.ids:
            if has_filter:
                raise ValidationError("give ids or filter, not both")
            if len(request.ids) > MAX_BULK:
                raise ValidationError(f"ids names {len(request.ids)} tasks; at most {MAX_BULK}")
            result = await self.service.act(who, action, parse_ids(request.ids))
        elif has_filter:
            limit = request.limit or DEFAULT_BULK_LIMIT
            result = await self.service.act_on_filter(
                who, action, task_filter(request.filter), limit, request.cursor or None
            )
        else:
            raise ValidationError("give ids, or a filter that sets at least one field")
        items = [
            pb.ItemResult(id=format_task_id(r.task_id), code=r.code, message=r.message)
            for r in result.results
        ]
        return pb.BulkResponse(
            results=items, applied=result.applied, truncated=result.truncated,
            next_cursor=result.next_cursor or b"",
        )  # fmt: skip

    @_rpc
    async def CancelTasks(
        self, request: pb.BulkRequest, context: Ctx, who: Principal
    ) -> pb.BulkResponse:
        return await self._bulk(who, Action.CANCEL, request)

    @_rpc
    async def RetryTasks(
        self, request: pb.BulkRequest, context: Ctx, who: Principal
    ) -> pb.BulkResponse:
        return await self._bulk(who, Action.RETRY, request)

    @_rpc
    async def DeleteTasks(
        self, request: pb.BulkRequest, context: Ctx, who: Principal
    ) -> pb.BulkResponse:
        return await self._bulk(who, Action.DELETE, request)

    # ------------------------------------------------------------------ broker state

    @_rpc
    async def GetStats(self, request: pb.GetStatsRequest, context: Ctx, who: Principal) -> pb.Stats:
        return stats_to_pb(self.service.stats(who), time.time())

    @_rpc
    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: Ctx, who: Principal
    ) -> pb.ClusterStatus:
        return cluster_to_pb(self.service.cluster_status(who))

    @_rpc
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Ctx, who: Principal
    ) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(workers=workers_to_pb(self.service.workers(who)))

    @_rpc
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Ctx, who: Principal
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=queues_to_pb(self.service.stats(who).queues))

    # ------------------------------------------------------------------ worker control

    @_rpc
    async def InspectWorker(
        self, request: pb.WorkerRequest, context: Ctx, who: Principal
    ) -> pb.WorkerDetail:
        return detail_to_pb(self.service.inspect_worker(who, WorkerId(request.id)))

    async def _order(
        self, who: Principal, worker_id: str, action: OrderAction, queue: str = ""
    ) -> pb.WorkerOrdered:
        done = await self.service.control_worker(who, WorkerId(worker_id), action, queue)
        return ordered_to_pb(done)

    @_rpc
    async def ShutdownWorker(
        self, request: pb.WorkerRequest, context: Ctx, who: Principal
    ) -> pb.WorkerOrdered:
        return await self._order(who, request.id, OrderAction.SHUTDOWN)

    @_rpc
    async def ConsumeQueue(
        self, request: pb.WorkerQueueRequest, context: Ctx, who: Principal
    ) -> pb.WorkerOrdered:
        return await self._order(who, request.id, OrderAction.CONSUME, request.queue)

    @_rpc
    async def StopConsuming(
        self, request: pb.WorkerQueueRequest, context: Ctx, who: Principal
    ) -> pb.WorkerOrdered:
        return await self._order(who, request.id, OrderAction.STOP_CONSUMING, request.queue)

    # ------------------------------------------------------------------ streams

    @_rpc
    async def WatchTasks(self, request: pb.WatchTasksRequest, context: Ctx, who: Principal) -> None:
        await self.watches.tasks(
            who, request, context.write, lambda: context.send_initial_metadata(())
        )

    @_rpc
    async def WatchStats(self, request: pb.WatchStatsRequest, context: Ctx, who: Principal) -> None:
        await self.watches.stats(who, request, context.write)

    # ------------------------------------------------------------------ API keys

    @_rpc
    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Ctx, who: Principal
    ) -> pb.CreateKeyResponse:
        info, secret = await self.service.create_key(who, key_spec_from_pb(request))
        return pb.CreateKeyResponse(key=key_to_pb(info), secret=secret)

    @_rpc
    async def ListKeys(
        self, request: pb.ListKeysRequest, context: Ctx, who: Principal
    ) -> pb.ListKeysResponse:
        return pb.ListKeysResponse(keys=[key_to_pb(k) for k in self.service.list_keys(who)])

    @_rpc
    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Ctx, who: Principal
    ) -> pb.ApiKey:
        return key_to_pb(await self.service.revoke_key(who, request.id))

    # ------------------------------------------------------------------ schedules

    @_rpc
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Ctx, who: Principal
    ) -> pb.Schedule:
        spec = schedule_spec_from_pb(request.schedule)
        return schedule_to_pb(await self.service.create_schedule(who, spec, request.replace))

    @_rpc
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Ctx, who: Principal
    ) -> pb.ListSchedulesResponse:
        found = self.service.list_schedules(who)
        return pb.ListSchedulesResponse(schedules=[schedule_to_pb(s) for s in found])

    @_rpc
    async def GetSchedule(
        self, request: pb.ScheduleRequest, context: Ctx, who: Principal
    ) -> pb.Schedule:
        return schedule_to_pb(self.service.get_schedule(who, request.name))

    @_rpc
    async def PauseSchedule(
        self, request: pb.ScheduleRequest, context: Ctx, who: Principal
    ) -> pb.Schedule:
        return schedule_to_pb(await self.service.pause_schedule(who, request.name))

    @_rpc
    async def ResumeSchedule(
        self, request: pb.ScheduleRequest, context: Ctx, who: Principal
    ) -> pb.Schedule:
        return schedule_to_pb(await self.service.resume_schedule(who, request.name))

    @_rpc
    async def DeleteSchedule(
        self, request: pb.ScheduleRequest, context: Ctx, who: Principal
    ) -> pb.Schedule:
        return schedule_to_pb(await self.service.delete_schedule(who, request.name))

    # ------------------------------------------------------------------ flow control

    @_rpc
    async def PauseQueue(
        self, request: pb.QueueRequest, context: Ctx, who: Principal
    ) -> pb.QueueState:
        queue = name_from_pb(request.queue, "queue")
        return queue_state_to_pb(await self.service.pause_queue(who, queue))

    @_rpc
    async def ResumeQueue(
        self, request: pb.QueueRequest, context: Ctx, who: Principal
    ) -> pb.QueueState:
        queue = name_from_pb(request.queue, "queue")
        return queue_state_to_pb(await self.service.pause_queue(who, queue, paused=False))

    @_rpc
    async def ListLimits(
        self, request: pb.ListLimitsRequest, context: Ctx, who: Principal
    ) -> pb.ListLimitsResponse:
        return pb.ListLimitsResponse(limits=[limit_to_pb(x) for x in self.service.limits(who)])

    @_rpc
    async def SetLimit(self, request: pb.SetLimitRequest, context: Ctx, who: Principal) -> pb.Limit:
        return limit_to_pb(await self.service.set_limit(who, limit_spec_from_pb(request)))

    @_rpc
    async def ClearLimit(
        self, request: pb.ClearLimitRequest, context: Ctx, who: Principal
    ) -> pb.ClearLimitResponse:
        scope = scope_from_pb(request.scope)
        await self.service.clear_limit(who, scope, name_from_pb(request.name, "name"))
        return pb.ClearLimitResponse()
