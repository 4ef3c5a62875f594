"""A broker with auth on and the keys the access tests present, plus every TCP operation as a
row: what it needs (permission, whether a queue-scoped key must hold its queue), how to set it
up with the admin key, and the reply it gets when permitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.integration.rawconn import RawConn
from tq.core.ids import TaskId
from tq.protocol import (
    Ack,
    ActOnFilter,
    ActOnTasks,
    ActReply,
    CancelReply,
    CancelTask,
    ClaimReply,
    ClaimTask,
    ClusterStatusReply,
    DeregisterWorker,
    GetClusterStatus,
    GetStats,
    Heartbeat,
    HeartbeatReply,
    KeyCreate,
    KeyCreateReply,
    KeyList,
    KeyListReply,
    KeyRevoke,
    KeyRevokeReply,
    KeySpec,
    LimitClear,
    LimitList,
    LimitListReply,
    LimitSet,
    LimitSetReply,
    LimitSpec,
    ListReply,
    ListTasks,
    ListWorkers,
    Nack,
    Ping,
    Pong,
    Progress,
    QueryStatus,
    QueuePause,
    QueueResume,
    QueueStateReply,
    RegisterReply,
    RegisterWorker,
    ReleaseTasks,
    ResultReply,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleList,
    ScheduleListReply,
    SchedulePause,
    ScheduleReply,
    ScheduleResume,
    ScheduleSpec,
    StatsReply,
    StatusReply,
    SubmitReply,
    SubmitTask,
    Subscribe,
    TaskLease,
    TaskOutcome,
    TaskResult,
    TaskSpec,
    Unsubscribe,
    WorkerControl,
    WorkerControlReply,
    WorkerInspect,
    WorkerInspectReply,
    WorkersReply,
)

Q = "q"  #: the queue every operation names


async def call(conn: RawConn, build: Callable[[int], Any]) -> Any:
    return await conn.call(build(conn.rid()))


async def ok(conn: RawConn, build: Callable[[int], Any]) -> Any:
    reply = await call(conn, build)
    assert not isinstance(reply, Nack), reply
    return reply


async def submit(admin: RawConn, queue: str = Q) -> TaskId:
    reply = await ok(
        admin, lambda r: SubmitTask(request_id=r, tasks=[TaskSpec(task_type="t", queue=queue)])
    )
    return TaskId(reply.ids[0])


async def claimed(admin: RawConn) -> tuple[TaskId, int]:
    """A task of Q claimed by worker "adm" (other tasks of Q are cancelled first, so the claim
    takes this one)."""
    task_id = await submit(admin)
    reply = await ok(
        admin, lambda r: ClaimTask(request_id=r, worker_id="adm", queues=[Q], max_tasks=1000)
    )
    mine = [t for t in reply.tasks if t.id == task_id]
    assert mine, "the task just submitted was not claimed"
    return task_id, mine[0].lease_token


async def create_key(admin: RawConn, spec: KeySpec) -> tuple[str, str]:
    """(id, secret) of a new key."""
    reply = await ok(admin, lambda r: KeyCreate(request_id=r, key=spec))
    return reply.key.id, reply.secret


async def snapshot(admin: RawConn) -> tuple[Any, ...]:
    """What any refused request must leave as it was: counts, totals, workers and keys. A
    HEARTBEAT of "adm" first: answered once durable, so the totals shown (those of the latest
    durable batch) include every change made before it."""
    await ok(admin, lambda r: Heartbeat(request_id=r, worker_id="adm"))
    stats = (await ok(admin, lambda r: GetStats(request_id=r))).stats
    workers = (await ok(admin, lambda r: ListWorkers(request_id=r))).workers
    keys = (await ok(admin, lambda r: KeyList(request_id=r))).keys
    limits = (await ok(admin, lambda r: LimitList(request_id=r))).limits
    counts = (stats.pending, stats.scheduled, stats.in_progress, stats.failed, stats.dead_letter)
    return (
        counts,
        sorted(stats.totals.items()),
        sorted(w.id for w in workers),
        sorted((k.id, k.revoked_at) for k in keys),
        sorted((x.scope, x.name, x.set_at) for x in limits),
        sorted(name for name, q in stats.queues.items() if q.paused),
    )


Build = Callable[[int], Any]
Prepare = Callable[[RawConn], Awaitable[Build]]


@dataclass(frozen=True)
class Op:
    name: str
    permission: str | None  #: None: no permission needed (PING)
    scoped: bool  #: a queue-scoped key of another queue is refused it
    prepare: Prepare
    request: type
    reply: type


def _fixed(build: Build) -> Prepare:
    async def prepare(admin: RawConn) -> Build:
        return build

    return prepare


async def _status(admin: RawConn) -> Build:
    task_id = await submit(admin)
    return lambda r: QueryStatus(request_id=r, task_ids=[task_id])


async def _result(admin: RawConn) -> Build:
    task_id, token = await claimed(admin)
    outcome = TaskOutcome(task_id=task_id, lease_token=token, ok=True)
    return lambda r: TaskResult(request_id=r, results=[outcome])


async def _progress(admin: RawConn) -> Build:
    task_id, token = await claimed(admin)
    return lambda r: Progress(request_id=r, task_id=task_id, lease_token=token, percent=50)


async def _release(admin: RawConn) -> Build:
    task_id, token = await claimed(admin)
    lease = TaskLease(task_id=task_id, lease_token=token)
    return lambda r: ReleaseTasks(request_id=r, worker_id="adm", leases=[lease])


async def _cancel(admin: RawConn) -> Build:
    task_id = await submit(admin)
    return lambda r: CancelTask(request_id=r, task_ids=[task_id])


async def _act(admin: RawConn) -> Build:
    task_id = await submit(admin)
    return lambda r: ActOnTasks(request_id=r, action="cancel", task_ids=[task_id])


async def _act_filter(admin: RawConn) -> Build:
    await submit(admin)
    return lambda r: ActOnFilter(request_id=r, action="cancel", queue=Q, limit=1)


async def _claim(admin: RawConn) -> Build:
    await submit(admin)
    return lambda r: ClaimTask(request_id=r, worker_id="w", queues=[Q], max_tasks=1)


async def _revoke(admin: RawConn) -> Build:
    key_id, _ = await create_key(admin, KeySpec(name="doomed", permissions=["read"]))
    return lambda r: KeyRevoke(request_id=r, key_id=key_id)


async def _limit_clear(admin: RawConn) -> Build:
    spec = LimitSpec(scope="queue", name=Q, concurrency=1_000_000)
    await ok(admin, lambda r: LimitSet(request_id=r, limit=spec))
    return lambda r: LimitClear(request_id=r, scope="queue", name=Q)


#: A cap no test reaches: permitted, it changes what is stored, never what is claimed.
_LOOSE = LimitSpec(scope="type", name="t", concurrency=1_000_000)


async def _worker_of_q(admin: RawConn) -> str:
    """A registered worker consuming Q (registered again each time: harmless)."""
    await ok(admin, lambda r: RegisterWorker(request_id=r, worker_id="wc", queues=[Q]))
    return "wc"


async def _inspect(admin: RawConn) -> Build:
    worker_id = await _worker_of_q(admin)
    return lambda r: WorkerInspect(request_id=r, worker_id=worker_id)


async def _order(admin: RawConn) -> Build:
    # Consuming the queue it consumes: permitted or not by the same rule, and changes nothing.
    worker_id = await _worker_of_q(admin)
    return lambda r: WorkerControl(request_id=r, worker_id=worker_id, action="consume", queue=Q)


_schedules = iter(range(1, 1_000_000))


def _schedule_spec(name: str) -> ScheduleSpec:
    """Paused, hourly: a schedule of Q that never fires while a test looks at the state."""
    return ScheduleSpec(name=name, interval=3600, task_type="t", queue=Q, paused=True)


def _schedule_create(r: int) -> ScheduleCreate:
    # Replace: a permitted create of a definition already there changes nothing.
    return ScheduleCreate(request_id=r, schedule=_schedule_spec("authz-create"), replace=True)


async def _schedule(admin: RawConn) -> str:
    """A fresh paused schedule of Q (each row acts on one of its own)."""
    name = f"authz-{next(_schedules)}"
    await ok(admin, lambda r: ScheduleCreate(request_id=r, schedule=_schedule_spec(name)))
    return name


async def _schedule_get(admin: RawConn) -> Build:
    name = await _schedule(admin)
    return lambda r: ScheduleGet(request_id=r, name=name)


async def _schedule_pause(admin: RawConn) -> Build:
    name = await _schedule(admin)
    return lambda r: SchedulePause(request_id=r, name=name)


async def _schedule_resume(admin: RawConn) -> Build:
    name = await _schedule(admin)
    return lambda r: ScheduleResume(request_id=r, name=name)


async def _schedule_delete(admin: RawConn) -> Build:
    name = await _schedule(admin)
    return lambda r: ScheduleDelete(request_id=r, name=name)


def _submit_build(r: int) -> SubmitTask:
    return SubmitTask(request_id=r, tasks=[TaskSpec(task_type="t", queue=Q)])


OPS: list[Op] = [
    Op("ping", None, False, _fixed(lambda r: Ping(request_id=r)), Ping, Pong),
    Op("submit", "submit", True, _fixed(_submit_build), SubmitTask, SubmitReply),
    Op("status", "read", True, _status, QueryStatus, StatusReply),
    Op(
        "list",
        "read",
        True,
        _fixed(lambda r: ListTasks(request_id=r, queue=Q)),
        ListTasks,
        ListReply,
    ),
    Op("stats", "read", False, _fixed(lambda r: GetStats(request_id=r)), GetStats, StatsReply),
    Op(
        "cluster",
        "read",
        False,
        _fixed(lambda r: GetClusterStatus(request_id=r)),
        GetClusterStatus,
        ClusterStatusReply,
    ),
    Op(
        "workers",
        "read",
        False,
        _fixed(lambda r: ListWorkers(request_id=r)),
        ListWorkers,
        WorkersReply,
    ),
    Op(
        "subscribe",
        "read",
        True,
        _fixed(lambda r: Subscribe(request_id=r, queues=[Q])),
        Subscribe,
        Ack,
    ),
    Op(
        "unsubscribe",
        "read",
        False,
        _fixed(lambda r: Unsubscribe(request_id=r, subscription_id=99)),
        Unsubscribe,
        Ack,
    ),
    Op(
        "register",
        "work",
        True,
        _fixed(lambda r: RegisterWorker(request_id=r, worker_id="w", queues=[Q])),
        RegisterWorker,
        RegisterReply,
    ),
    Op("claim", "work", True, _claim, ClaimTask, ClaimReply),
    Op(
        "heartbeat",
        "work",
        False,
        _fixed(lambda r: Heartbeat(request_id=r, worker_id="w")),
        Heartbeat,
        HeartbeatReply,
    ),
    Op("result", "work", True, _result, TaskResult, ResultReply),
    Op("progress", "work", True, _progress, Progress, Ack),
    Op("release", "work", True, _release, ReleaseTasks, Ack),
    Op(
        "deregister",
        "work",
        False,
        _fixed(lambda r: DeregisterWorker(request_id=r, worker_id="w")),
        DeregisterWorker,
        Ack,
    ),
    Op("cancel", "admin", True, _cancel, CancelTask, CancelReply),
    Op("act", "admin", True, _act, ActOnTasks, ActReply),
    Op("act_filter", "admin", True, _act_filter, ActOnFilter, ActReply),
    Op(
        "key_create",
        "admin",
        True,
        _fixed(lambda r: KeyCreate(request_id=r, key=KeySpec(name="m", permissions=["read"]))),
        KeyCreate,
        KeyCreateReply,
    ),
    Op("key_list", "admin", True, _fixed(lambda r: KeyList(request_id=r)), KeyList, KeyListReply),
    Op("key_revoke", "admin", True, _revoke, KeyRevoke, KeyRevokeReply),
    # Pause right before resume: a permitted pause is undone by the resume that follows.
    Op(
        "queue_pause",
        "admin",
        True,
        _fixed(lambda r: QueuePause(request_id=r, queue=Q)),
        QueuePause,
        QueueStateReply,
    ),
    Op(
        "queue_resume",
        "admin",
        True,
        _fixed(lambda r: QueueResume(request_id=r, queue=Q)),
        QueueResume,
        QueueStateReply,
    ),
    Op(
        "limit_set",
        "admin",
        True,
        _fixed(lambda r: LimitSet(request_id=r, limit=_LOOSE)),
        LimitSet,
        LimitSetReply,
    ),
    Op("limit_clear", "admin", True, _limit_clear, LimitClear, Ack),
    Op(
        "limit_list",
        "read",
        False,
        _fixed(lambda r: LimitList(request_id=r)),
        LimitList,
        LimitListReply,
    ),
    Op("schedule_create", "submit", True, _fixed(_schedule_create), ScheduleCreate, ScheduleReply),
    Op(
        "schedule_list",
        "read",
        False,
        _fixed(lambda r: ScheduleList(request_id=r)),
        ScheduleList,
        ScheduleListReply,
    ),
    Op("schedule_get", "read", True, _schedule_get, ScheduleGet, ScheduleReply),
    Op("schedule_pause", "admin", True, _schedule_pause, SchedulePause, ScheduleReply),
    Op("schedule_resume", "admin", True, _schedule_resume, ScheduleResume, ScheduleReply),
    Op("schedule_delete", "admin", True, _schedule_delete, ScheduleDelete, ScheduleReply),
    Op("worker_inspect", "read", True, _inspect, WorkerInspect, WorkerInspectReply),
    Op("worker_control", "admin", True, _order, WorkerControl, WorkerControlReply),
]


def permits(permissions: frozenset[str], queues: frozenset[str] | None, op: Op) -> bool:
    """What the documented model says: the permission (admin implies all), then the scope."""
    if op.permission is not None and not ({op.permission, "admin"} & permissions):
        return False
    return queues is None or Q in queues or not op.scoped


async def until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``cond`` (polled), failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
