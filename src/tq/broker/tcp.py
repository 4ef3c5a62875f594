"""The TCP front door: an asyncio Protocol per connection over the sans-I/O ServerConnection.

Every read is parsed whole (all complete frames), each request goes straight to the service,
and replies are gathered per connection and written once per loop turn. A protocol error
gets a NACK, then the connection closes; no client input can raise out of here. The first
connection over the limit is refused with NACK TOO_MANY_CONNECTIONS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from tq.broker.requests import ListQuery, TaskFilter, Watch
from tq.broker.service import BrokerService, Durable
from tq.core.effects import TaskEvent as CoreEvent
from tq.core.ids import TaskId, WorkerId
from tq.core.replies import ClaimedTask
from tq.errors import ErrorCode, TqError, UnavailableError
from tq.protocol import (
    Ack,
    CancelReply,
    ClaimReply,
    FrameError,
    HeartbeatReply,
    ListReply,
    Pong,
    RegisterReply,
    ResultReply,
    ServerConnection,
    StatsReply,
    StatusReply,
    SubmitReply,
    TaskEvent,
    WorkersReply,
    encode,
    nack_frame,
)
from tq.protocol import messages as m
from tq.protocol.records import ClaimedTask as WireClaimed

log = logging.getLogger(__name__)
DOOR = "tcp"  #: this door's name in the service's connection counters


class Connections:
    """The live connections, for the limit, idle sweeps and shutdown."""

    def __init__(self) -> None:
        self.open: set[BrokerProtocol] = set()

    def close_idle(self, idle_timeout: float) -> None:
        """Close connections silent for ``idle_timeout``, unless they wait on the broker (a
        subscription or a parked claim): silence is then the broker's, not theirs."""
        now = time.monotonic()
        for conn in list(self.open):
            if now - conn.last_active > idle_timeout and not conn.waiting_on_broker():
                conn.abort_with(UnavailableError(f"idle for more than {idle_timeout:g} s"))

    def close_all(self, why: TqError) -> None:
        for conn in list(self.open):
            conn.abort_with(why)


class BrokerProtocol(asyncio.Protocol):
    def __init__(self, service: BrokerService, conns: Connections) -> None:
        b = service.settings.broker
        self.service = service
        self.conns = conns
        self.conn = ServerConnection(
            server_name="tq",
            node_id=service.node_id,
            heartbeat_interval=b.heartbeat_interval_s,
            lease_duration=b.lease_duration_s,
            max_frame_size=b.max_frame_size_bytes,
        )
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.last_active = time.monotonic()
        self.peer = "?"
        self.admitted = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername"))
        limit = self.service.settings.broker.max_connections
        if len(self.conns.open) >= limit:
            err = UnavailableError(
                f"connection limit of {limit} reached", ErrorCode.TOO_MANY_CONNECTIONS
            )
            self.transport.write(nack_frame(None, err))
            self.transport.close()
            self.service.connection_refused(DOOR)
            log.warning("connection.refused peer=%s reason=limit", self.peer)
            return
        self.conns.open.add(self)
        self.admitted = True
        self.service.connection_opened(DOOR)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.open.discard(self)
        if self.admitted:
            self.admitted = False
            self.service.connection_closed(DOOR)
        self.service.detach(self)
        self.transport = None

    def waiting_on_broker(self) -> bool:
        return self.service.is_waiting(self)

    def pause_writing(self) -> None:
        # The peer reads slower than we answer: stop reading its requests until it catches up.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            requests = self.conn.receive_data(data)
        except FrameError as e:
            for req in e.messages:
                self.dispatch(req)
            log.warning("connection.protocol_error peer=%s error=%s", self.peer, e)
            self.abort_with(e)
            return
        for req in requests:
            self.dispatch(req)

    # ------------------------------------------------------------------ output

    def send(self, frame: bytes) -> None:
        if self.transport is None:
            return
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(frame)

    def _flush(self) -> None:
        if self.transport is not None and self.out:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def abort_with(self, error: TqError) -> None:
        """NACK ``error`` for the whole connection (after what was queued) and close it."""
        if self.transport is None:
            return
        self.out.append(self.conn.nack(error))
        self._flush()
        self.transport.close()
        self.conns.open.discard(self)

    def after(self, durable: Durable, make: Callable[[], Any], request_id: int) -> None:
        """Send ``make()`` once ``durable`` resolves (a NACK if the batch could not be made
        durable)."""

        def done(f: Durable) -> None:
            if f.exception() is not None:
                err = f.exception()
                assert isinstance(err, TqError)
                self.send(self.conn.nack(err, request_id))
            else:
                self.send(encode(make()))

        durable.add_done_callback(done)

    def push_event(self, subscription_id: int, ev: CoreEvent) -> None:
        self.send(
            encode(
                TaskEvent(
                    subscription_id=subscription_id, task_id=ev.task_id, state=ev.state.value,
                    queue=ev.queue, task_type=ev.task_type, at=ev.at, attempts=ev.attempts,
                    result=ev.result, error=ev.error, progress=ev.progress,
                    progress_message=ev.progress_message, error_type=ev.error_type,
                )
            )
        )  # fmt: skip

    def watch_ended(self, subscription_id: int) -> None:
        """A one-shot subscription is over; the client knows from the terminal events."""

    # ------------------------------------------------------------------ requests

    def dispatch(self, req: Any) -> None:
        handler = _HANDLERS.get(type(req))
        try:
            if handler is None:
                raise TqError(f"{type(req).__name__} is not served", ErrorCode.UNKNOWN_MESSAGE_TYPE)
            handler(self, req)
        except TqError as e:
            self.send(self.conn.nack(e, req.request_id))
        except Exception as e:  # a bug must cost one request, never the broker
            log.exception("request.crashed type=%s peer=%s", type(req).__name__, self.peer)
            self.send(
                self.conn.nack(TqError(f"internal error: {type(e).__name__}"), req.request_id)
            )


def _hello(p: BrokerProtocol, req: m.Hello) -> None:
    p.send(p.conn.welcome())


def _ping(p: BrokerProtocol, req: m.Ping) -> None:
    p.send(encode(Pong(request_id=req.request_id)))


def _submit(p: BrokerProtocol, req: m.SubmitTask) -> None:
    # Latency is measured from the read that carried the request.
    reply, durable = p.service.submit(req.tasks, received=p.last_active)
    rid = req.request_id
    p.after(durable, lambda: SubmitReply(request_id=rid, ids=reply.ids, created=reply.created), rid)


def _claim(p: BrokerProtocol, req: m.ClaimTask) -> None:
    rid = req.request_id

    def respond(tasks: list[ClaimedTask]) -> None:
        p.send(encode(ClaimReply(request_id=rid, tasks=[_wire(t) for t in tasks])))

    p.service.claim(
        WorkerId(req.worker_id), req.queues, req.max_tasks, req.wait_ms / 1000, respond, p,
        received=p.last_active,
    )  # fmt: skip


def _wire(t: ClaimedTask) -> WireClaimed:
    return WireClaimed(
        id=t.id, task_type=t.task_type, queue=t.queue, payload=t.payload, priority=t.priority,
        attempts=t.attempts, max_retries=t.max_retries, timeout=t.timeout,
        lease_token=t.lease_token, lease_expires_at=t.lease_expires_at,
        created_at=t.created_at, tags=t.tags,
    )  # fmt: skip


def _result(p: BrokerProtocol, req: m.TaskResult) -> None:
    codes, durable = p.service.report(req.results)
    rid = req.request_id
    p.after(durable, lambda: ResultReply(request_id=rid, codes=codes), rid)


def _progress(p: BrokerProtocol, req: m.Progress) -> None:
    durable = p.service.progress(req.task_id, req.lease_token, req.percent, req.message)
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


def _release(p: BrokerProtocol, req: m.ReleaseTasks) -> None:
    durable = p.service.release(WorkerId(req.worker_id), req.task_ids)
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


def _status(p: BrokerProtocol, req: m.QueryStatus) -> None:
    infos = p.service.status(req.task_ids, req.include_payload)
    p.send(encode(StatusReply(request_id=req.request_id, tasks=infos)))


def _cancel(p: BrokerProtocol, req: m.CancelTask) -> None:
    codes, durable = p.service.cancel(req.task_ids)
    p.after(durable, lambda: CancelReply(request_id=req.request_id, codes=codes), req.request_id)


def _list(p: BrokerProtocol, req: m.ListTasks) -> None:
    f = TaskFilter.build(
        state=req.state, queue=req.queue, task_type=req.task_type,
        priority_min=req.priority_min, priority_max=req.priority_max,
        created_after=req.created_after, created_before=req.created_before,
    )  # fmt: skip
    infos, cursor = p.service.list_tasks(ListQuery(f, req.cursor, req.limit))
    p.send(encode(ListReply(request_id=req.request_id, tasks=infos, next_cursor=cursor)))


def _stats(p: BrokerProtocol, req: m.GetStats) -> None:
    p.send(encode(StatsReply(request_id=req.request_id, stats=p.service.stats())))


def _subscribe(p: BrokerProtocol, req: m.Subscribe) -> None:
    ids = tuple(TaskId(i) for i in req.task_ids)
    watch = Watch(ids, tuple(req.queues), req.all, req.until_terminal)
    p.service.watch(p, req.request_id, watch)
    p.send(encode(Ack(request_id=req.request_id)))


def _unsubscribe(p: BrokerProtocol, req: m.Unsubscribe) -> None:
    p.service.unwatch(p, req.subscription_id)
    p.send(encode(Ack(request_id=req.request_id)))


def _workers(p: BrokerProtocol, req: m.ListWorkers) -> None:
    p.send(encode(WorkersReply(request_id=req.request_id, workers=p.service.workers())))


def _register(p: BrokerProtocol, req: m.RegisterWorker) -> None:
    durable = p.service.register(
        WorkerId(req.worker_id), name=req.name, queues=req.queues,
        concurrency=req.concurrency, hostname=req.hostname, pid=req.pid,
    )  # fmt: skip
    b = p.service.settings.broker
    p.after(
        durable,
        lambda: RegisterReply(
            request_id=req.request_id,
            worker_id=req.worker_id,
            lease_duration=b.lease_duration_s,
            heartbeat_interval=b.heartbeat_interval_s,
        ),
        req.request_id,
    )


def _heartbeat(p: BrokerProtocol, req: m.Heartbeat) -> None:
    reply, cancelled, durable = p.service.heartbeat(
        WorkerId(req.worker_id), req.cpu_percent, req.memory_rss, [TaskId(i) for i in req.running]
    )
    gone = [i for i in reply.unknown if i not in cancelled]
    p.after(
        durable,
        lambda: HeartbeatReply(
            request_id=req.request_id,
            lease_expires_at=reply.lease_expires_at,
            cancelled=cancelled,
            unknown=gone,
        ),
        req.request_id,
    )


def _deregister(p: BrokerProtocol, req: m.DeregisterWorker) -> None:
    durable = p.service.deregister(WorkerId(req.worker_id))
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


_HANDLERS: dict[type, Callable[[BrokerProtocol, Any], None]] = {
    m.Hello: _hello,
    m.Ping: _ping,
    m.SubmitTask: _submit,
    m.ClaimTask: _claim,
    m.TaskResult: _result,
    m.Progress: _progress,
    m.ReleaseTasks: _release,
    m.QueryStatus: _status,
    m.CancelTask: _cancel,
    m.ListTasks: _list,
    m.GetStats: _stats,
    m.Subscribe: _subscribe,
    m.Unsubscribe: _unsubscribe,
    m.ListWorkers: _workers,
    m.RegisterWorker: _register,
    m.Heartbeat: _heartbeat,
    m.DeregisterWorker: _deregister,
}
