"""AsyncClient: tq's client API over one pipelined connection (the sync ``Client`` wraps it).

Task ids are canonical UUID text at this API and 16 raw bytes on the wire. Waiting for a task
is pushed, never polled: SUBSCRIBE with ``until_terminal``, then one QUERY_STATUS for the exact
result. The worker-side methods are one message each; the worker owns their policy.

Every call reconnects until its deadline (its ``timeout``, else ``request_timeout``; waits
without a timeout have none). A request lost with its connection is sent again only where that
is harmless: reads (status, list_tasks, stats, workers, ping), waits and subscriptions, and
submits whose every task has an idempotency key. Plain submits, ``submit_nowait``, cancels,
retries and deletes raise ConnectionLostError instead: their outcome is unknown.
Retry, delete and the bulk actions by filter are ``tq.client.bulk``'s.

A cluster client names several nodes (``AsyncClient(["tq://a:7420", "tq://b:7420"])`` or
``"tq://a:7420,tq://b:7420"``): it moves to the next when one cannot be reached, and to the
leader when a node refuses a write NOT_LEADER, sending the refused request again there (it
was not applied). ``tq.client.session`` states the rules.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Final, Literal, Self

from tq.client.address import default_url
from tq.client.bulk import BulkCalls
from tq.client.control import ControlCalls
from tq.client.pacing import Deadline
from tq.client.resubscribe import SubscriptionState
from tq.client.schedules import ScheduleCalls
from tq.client.session import Session
from tq.client.specs import batches, task_spec
from tq.client.specs import task_ids as parse_ids
from tq.client.subscription import Subscription
from tq.client.tls import TlsConfig
from tq.client.workers import WorkerCalls
from tq.core.ids import format_task_id, parse_task_id
from tq.core.model import TaskState
from tq.errors import (
    ErrorCode,
    NotFoundError,
    NotLeaderError,
    ProtocolError,
    TaskFailedError,
    TqError,
    UnavailableError,
    ValidationError,
    error_for_code,
)
from tq.protocol import (
    Ack,
    CancelReply,
    CancelTask,
    ClusterStatus,
    ClusterStatusReply,
    GetClusterStatus,
    GetStats,
    KeyCreate,
    KeyCreateReply,
    KeyInfo,
    KeyList,
    KeyListReply,
    KeyRevoke,
    KeyRevokeReply,
    KeySpec,
    LimitClear,
    LimitInfo,
    LimitList,
    LimitListReply,
    LimitSet,
    LimitSetReply,
    LimitSpec,
    ListReply,
    ListTasks,
    ListWorkers,
    Ping,
    Pong,
    QueryStatus,
    QueuePause,
    QueueResume,
    QueueState,
    QueueStateReply,
    RetrySpec,
    Stats,
    StatsReply,
    StatusReply,
    SubmitReply,
    SubmitTask,
    TaskEvent,
    TaskInfo,
    TaskSpec,
    WorkerInfo,
    WorkersReply,
)
from tq.protocol.records import DEFAULT_QUEUE
from tq.protocol.registry import Reply

#: States a task leaves again; any other state an until_terminal event carries ends a wait,
#: so a newer broker's new terminal state cannot hang us.
_NOT_TERMINAL: Final = frozenset({"pending", "scheduled", "in_progress", "failed"})
#: The least time the status read after a wait's terminal event gets, in seconds.
_LAST_READ: Final = 1.0


def task_outcome(info: TaskInfo | TaskEvent) -> bytes:
    """A finished task's result bytes; TaskFailedError if it went to dead letter or was
    cancelled (``remote_type`` is the handler's exception type). Takes the task's record or
    its terminal event: both carry the state, result and error."""
    task_id = format_task_id(info.id if isinstance(info, TaskInfo) else info.task_id)
    if info.state == TaskState.COMPLETED:
        return info.result or b""
    if info.state == TaskState.CANCELLED:
        raise TaskFailedError(
            f"task {task_id} was cancelled", ErrorCode.TASK_CANCELLED, task_id=task_id
        )
    if info.state == TaskState.DEAD_LETTER:
        cause = ": ".join(part for part in (info.error_type, info.error) if part) or "no error"
        raise TaskFailedError(
            f"task {task_id} failed: {cause}", task_id=task_id, remote_type=info.error_type
        )
    raise TqError(f"task {task_id} has not finished: it is {info.state}", ErrorCode.INVALID_STATE)


class AsyncClient(WorkerCalls, BulkCalls, ScheduleCalls, ControlCalls):
    """Connects lazily on the first call and reconnects by itself: a lost or refused
    connection is redialled, with pauses doubling up to ``max_reconnect_delay`` seconds,
    until the deadline of the call that needs it. ``async with`` closes it.

    ``url``: one broker, or the nodes of a cluster (a list of URLs, or one string of
    comma-separated URLs); None: ``$TQ_BROKER_URL``, else ``tq://127.0.0.1:7420``. The
    client follows the cluster's leader by itself; the API key and TLS settings serve
    every node.

    A ``tqs://`` URL is TLS, the broker always verified: ``tls`` is a ``TlsConfig`` (the CA
    to trust, a client certificate for mutual TLS) or an ``ssl.SSLContext`` of your own;
    None trusts the system's CAs. TLS settings with a ``tq://`` URL are a ConfigError."""

    spec = staticmethod(task_spec)

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        api_key: str | None = None,
        name: str | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        reconnect: bool = True,
        max_reconnect_delay: float = 5.0,
        client_kind: Literal["client", "worker"] = "client",
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> None:
        self._session = Session(
            url or default_url(),
            api_key=api_key,
            name=name if name is not None else f"tq-python-{os.getpid()}",
            client_kind=client_kind,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect=reconnect,
            max_reconnect_delay=max_reconnect_delay,
            tls=tls,
        )

    @property
    def url(self) -> str:
        """The node calls go to now (the leader, once a node named it)."""
        return self._session.address.url

    @property
    def urls(self) -> list[str]:
        """Every node the client was given, in order."""
        return [a.url for a in self._session.brokers.addresses]

    def __repr__(self) -> str:
        return f"AsyncClient({self._session.brokers.urls!r})"

    @property
    def connected(self) -> bool:
        """True while a handshaken connection is open (a call would not have to dial)."""
        return self._session.connected

    async def connect(self, timeout: float | None = None, *, retry: bool = True) -> None:
        """Connect now rather than on the first call. A refused connection is retried with
        backoff until ``timeout`` (default ``request_timeout``); ``retry=False`` makes one
        attempt, so a wrong address fails at once while later losses are still redialled."""
        await self._session.connection(self._session.deadline(timeout), once=not retry)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- submitting --------------------------------------------------------------------------

    async def submit(
        self,
        task_type: str,
        payload: bytes = b"",
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 128,
        delay: float | None = None,
        scheduled_at: float | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        retry: RetrySpec | None = None,
        depends_on: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        expires_at: float | None = None,
        task_id: str | None = None,
        result_ttl: float | None = None,
        failure_ttl: float | None = None,
        aging: bool = True,
    ) -> str:
        """Submit one task; returns its id once the broker has made it durable.

        ``expires_at``: a task still waiting then is cancelled instead of run. ``result_ttl``
        and ``failure_ttl``: seconds the task is kept once completed or dead-lettered
        (docs/result-lifetimes.md); None: the broker's defaults. ``aging`` False: the task
        keeps its priority however long it waits (docs/priority-aging.md)."""
        spec = task_spec(
            task_type, payload, queue=queue, priority=priority, delay=delay,
            scheduled_at=scheduled_at, max_retries=max_retries, timeout=timeout, retry=retry,
            depends_on=depends_on, tags=tags, idempotency_key=idempotency_key,
            expires_at=expires_at, task_id=task_id, result_ttl=result_ttl,
            failure_ttl=failure_ttl, aging=aging,
        )  # fmt: skip
        # One task always fits a frame (payloads are far below the frame limit): skip the
        # batching and gathering of submit_many, the path of every pipelined single submit.
        reply = await self._submit_run((spec,), spec.idempotency_key is not None)
        return format_task_id(reply.ids[0])

    def submit_nowait(self, spec: TaskSpec) -> asyncio.Future[str]:
        """The pipelining fast path: send one task now and return a future of its id, set
        once the broker has made it durable. No per-call timeout and no resend: a lost
        connection fails the future, and so does a NOT_LEADER refusal (not applied; the
        client then heads for the leader: ``await connect()`` and send again). Needs an
        open connection (``await connect()``)::

            spec = client.spec("resize", payload)
            ids = await asyncio.gather(*(client.submit_nowait(spec) for _ in range(10_000)))
        """
        conn = self._session.current()
        sent = conn.request_nowait(lambda rid: SubmitTask(request_id=rid, tasks=[spec]))
        out: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def settle(f: asyncio.Future[Reply]) -> None:
            if out.done():
                return
            if f.cancelled():
                out.cancel()
            elif (err := f.exception()) is not None:
                if isinstance(err, NotLeaderError):
                    self._session.follow(conn, err)  # the next connect() goes to the leader
                out.set_exception(err)
            else:
                reply = f.result()
                if isinstance(reply, SubmitReply):
                    out.set_result(format_task_id(reply.ids[0]))
                else:
                    out.set_exception(ProtocolError(f"expected SUBMIT_REPLY, got {reply!r}"))

        sent.add_done_callback(settle)
        return out

    async def submit_many(self, specs: Sequence[TaskSpec]) -> list[str]:
        """Submit many tasks in one SUBMIT_TASK (all or nothing), or in several frames when
        they exceed the broker's frame limit (then all or nothing per frame)."""
        if not specs:
            return []
        session = self._session
        conn = await session.connection(session.deadline())
        runs = batches(specs, conn.max_frame_size, conn.reply_frame_size)
        # With every task keyed, a retry after a lost connection returns the same tasks.
        retry = all(spec.idempotency_key is not None for spec in specs)
        replies = await asyncio.gather(*(self._submit_run(run, retry) for run in runs))
        return [format_task_id(i) for reply in replies for i in reply.ids]

    async def _submit_run(self, run: Sequence[TaskSpec], retry: bool) -> SubmitReply:
        tasks = list(run)
        return await self._session.call(
            lambda rid: SubmitTask(request_id=rid, tasks=tasks), SubmitReply, retry=retry
        )

    # --- inspecting and managing -------------------------------------------------------------

    async def status(self, task_id: str, *, include_payload: bool = False) -> TaskInfo:
        """Everything the broker knows about a task; NotFoundError if it has no such task."""
        return await self._status(task_id, include_payload, self._session.deadline())

    async def _status(self, task_id: str, include_payload: bool, deadline: Deadline) -> TaskInfo:
        tid = parse_task_id(task_id)
        reply = await self._session.call(
            lambda rid: QueryStatus(
                request_id=rid, task_ids=[tid], include_payload=include_payload
            ),
            StatusReply,
            deadline=deadline,
            retry=True,
        )
        info = reply.tasks[0]
        if info is None:
            raise NotFoundError(f"no task with id {format_task_id(tid)}")
        return info

    async def status_many(self, ids: Sequence[str]) -> list[TaskInfo | None]:
        """One TaskInfo per id, None where the broker has no such task."""
        tids = parse_ids(ids)
        reply = await self._session.call(
            lambda rid: QueryStatus(request_id=rid, task_ids=tids), StatusReply, retry=True
        )
        return list(reply.tasks)

    async def cancel(self, task_id: str) -> None:
        """Cancel a task; NotFoundError, or ConflictError (INVALID_STATE) if it already ended."""
        (code,) = await self.cancel_many([task_id])
        if code:
            raise _item_error(code, f"cannot cancel task {format_task_id(parse_task_id(task_id))}")

    async def cancel_many(self, ids: Sequence[str]) -> list[int]:
        """Per id: 0 when cancelled, else an ErrorCode (TASK_NOT_FOUND, INVALID_STATE)."""
        tids = parse_ids(ids)
        reply = await self._session.call(
            lambda rid: CancelTask(request_id=rid, task_ids=tids), CancelReply
        )
        return list(reply.codes)

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task_type: str | None = None,
        priority_min: int | None = None,
        priority_max: int | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        cursor: bytes | None = None,
    ) -> tuple[list[TaskInfo], bytes | None]:
        """One page of matching tasks and the cursor of the next page (None: last page)."""
        try:
            task_state = None if state is None else TaskState(state)
        except ValueError:
            states = ", ".join(TaskState)
            raise ValidationError(f"state {state!r} is not one of {states}") from None
        reply = await self._session.call(
            lambda rid: ListTasks(
                request_id=rid, state=task_state, queue=queue, task_type=task_type,
                priority_min=priority_min, priority_max=priority_max,
                created_after=created_after, created_before=created_before,
                cursor=cursor, limit=limit,
            ),
            ListReply,
            retry=True,
        )  # fmt: skip
        return list(reply.tasks), reply.next_cursor

    async def stats(self) -> Stats:
        reply = await self._session.call(
            lambda rid: GetStats(request_id=rid), StatsReply, retry=True
        )
        return reply.stats

    async def cluster_status(self) -> ClusterStatus:
        """The cluster's nodes, leader and log as the connected node sees them (a single
        broker answers ``enabled=False``)."""
        reply = await self._session.call(
            lambda rid: GetClusterStatus(request_id=rid), ClusterStatusReply, retry=True
        )
        return reply.status

    async def workers(self) -> list[WorkerInfo]:
        reply = await self._session.call(
            lambda rid: ListWorkers(request_id=rid), WorkersReply, retry=True
        )
        return list(reply.workers)

    # --- API keys (an admin key of every queue) -------------------------------------------

    async def create_key(self, spec: KeySpec) -> tuple[KeyInfo, str]:
        """A new API key and its secret: shown this once, the broker keeps only a hash."""
        reply = await self._session.call(
            lambda rid: KeyCreate(request_id=rid, key=spec), KeyCreateReply
        )
        return reply.key, reply.secret

    async def list_keys(self) -> list[KeyInfo]:
        """Every API key (revoked ones too), never a secret."""
        reply = await self._session.call(
            lambda rid: KeyList(request_id=rid), KeyListReply, retry=True
        )
        return list(reply.keys)

    async def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke a key by its id: it authenticates nothing from then on."""
        reply = await self._session.call(
            lambda rid: KeyRevoke(request_id=rid, key_id=key_id), KeyRevokeReply, retry=True
        )
        return reply.key

    # --- flow control (an admin key; a read key to list) ------------------------------------

    async def pause_queue(self, queue: str) -> QueueState:
        """Pause ``queue``: it takes submits and hands out nothing until resumed."""
        reply = await self._session.call(
            lambda rid: QueuePause(request_id=rid, queue=queue), QueueStateReply, retry=True
        )
        return reply.state

    async def resume_queue(self, queue: str) -> QueueState:
        """Resume ``queue``: its tasks are handed out again (parked claims at once)."""
        reply = await self._session.call(
            lambda rid: QueueResume(request_id=rid, queue=queue), QueueStateReply, retry=True
        )
        return reply.state

    async def set_limit(
        self,
        *,
        queue: str | None = None,
        task_type: str | None = None,
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
    ) -> LimitInfo:
        """Replace the limit of one ``queue`` or ``task_type``: at most ``concurrency`` of
        its tasks in progress at once; for a task type also at most ``rate`` claims per
        second, ``burst`` at once (default: the rate rounded up)."""
        scope, name = _limit_target(queue, task_type)
        spec = LimitSpec(scope=scope, name=name, rate=rate, burst=burst, concurrency=concurrency)
        reply = await self._session.call(
            lambda rid: LimitSet(request_id=rid, limit=spec), LimitSetReply, retry=True
        )
        return reply.limit

    async def clear_limit(self, *, queue: str | None = None, task_type: str | None = None) -> None:
        """Remove the limit of one ``queue`` or ``task_type`` (NotFoundError if none)."""
        scope, name = _limit_target(queue, task_type)
        await self._session.call(
            lambda rid: LimitClear(request_id=rid, scope=scope, name=name), Ack
        )

    async def limits(self) -> list[LimitInfo]:
        """Every limit, queues first, with its tasks in progress and tokens now."""
        reply = await self._session.call(
            lambda rid: LimitList(request_id=rid), LimitListReply, retry=True
        )
        return list(reply.limits)

    async def ping(self) -> float:
        """Round-trip time to the broker in seconds (connecting first is not counted)."""
        session = self._session
        await session.connection(session.deadline())
        loop = asyncio.get_running_loop()
        start = loop.time()
        await session.call(lambda rid: Ping(request_id=rid), Pong, retry=True)
        return loop.time() - start

    # --- waiting -----------------------------------------------------------------------------

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """The task's TaskInfo once it is terminal (completed, dead_letter, cancelled);
        UnavailableError with code TIMEOUT if that takes longer than ``timeout`` seconds
        (None: no limit). Broker outages within the timeout are ridden out (see ``result``)."""
        session = self._session
        deadline = session.until(timeout)
        await self._terminal_event(task_id, deadline)
        if deadline.at is not None and deadline.remaining() < _LAST_READ:
            # The task ended in time: a last round trip must not turn that into a timeout.
            deadline = session.until(_LAST_READ)
        return await self._status(task_id, False, deadline)

    async def _terminal_event(self, task_id: str, deadline: Deadline) -> TaskEvent:
        """The task's terminal event, pushed by the broker (at once if already finished).

        The subscription is held until ``deadline`` whatever happens to the connection: a
        lost one is redialled and the subscription sent again (the broker pushes the outcome
        of a task that finished meanwhile), so only the deadline ends the wait."""
        tid = parse_task_id(task_id)
        session = self._session
        done: asyncio.Future[TaskEvent] = asyncio.get_running_loop().create_future()

        def on_event(event: TaskEvent) -> None:
            if event.state not in _NOT_TERMINAL and not done.done():
                done.set_result(event)

        def on_error(error: TqError) -> None:
            if not done.done():
                done.set_exception(error)

        sub = SubscriptionState(
            task_ids=[tid],
            until_terminal=True,
            on_event=on_event,
            on_error=on_error,
            deadline=deadline,
        )
        try:
            async with asyncio.timeout_at(deadline.at):
                await session.subscribe(sub, deadline)
                return await done
        except TimeoutError:
            if not session.connected:
                raise session.late_error(deadline, f"task {format_task_id(tid)}") from None
            raise UnavailableError(
                f"task {format_task_id(tid)} did not finish {deadline.describe()}",
                ErrorCode.TIMEOUT,
            ) from None
        finally:
            session.unsubscribe(sub)
            if done.done() and not done.cancelled():
                done.exception()  # retrieved: an error that lost the race is not "unhandled"

    async def result(self, task_id: str, timeout: float | None = None) -> bytes:
        """Wait, then the result bytes; TaskFailedError if the task failed or was cancelled,
        UnavailableError TIMEOUT if ``timeout`` seconds (None: no limit) pass first. The
        wait survives broker restarts and outages until then: the client redials with
        capped backoff and subscribes again. The terminal event carries the outcome, so no
        status round trip follows it (unless the event was too large for our frame limit and
        came without it)."""
        session = self._session
        deadline = session.until(timeout)
        event = await self._terminal_event(task_id, deadline)
        if event.truncated:
            if deadline.at is not None and deadline.remaining() < _LAST_READ:
                deadline = session.until(_LAST_READ)  # ended in time: read it, do not fail
            return task_outcome(await self._status(task_id, False, deadline))
        return task_outcome(event)

    def subscribe(
        self,
        *,
        task_ids: Sequence[str] = (),
        queues: Sequence[str] = (),
        all: bool = False,
    ) -> Subscription:
        """Task events as they happen: ``async with client.subscribe(all=True) as events:
        async for event in events: ...`` (``await client.subscribe(...)`` also starts it)."""
        return Subscription(self._session, task_ids=task_ids, queues=queues, all=all)


def _limit_target(queue: str | None, task_type: str | None) -> tuple[Literal["queue", "type"], str]:
    if (queue is None) == (task_type is None):
        raise ValidationError("name exactly one of queue= and task_type= for a limit")
    if queue is not None:
        return "queue", queue
    assert task_type is not None
    return "type", task_type


def _item_error(code: int, context: str) -> TqError:
    try:
        what = ErrorCode(code).description
    except ValueError:
        what = f"error code {code}"
    return error_for_code(code, f"{context}: {what}")
