"""The TCP front door: an asyncio Protocol per connection over the sans-I/O ServerConnection.

Every read is parsed whole (all complete frames); requests go to the service in order while
the connection's pending output is under its high-water mark (see ``BrokerProtocol``), and
replies are gathered per connection and written once per loop turn. No frame above the
client's limit is ever sent. A protocol error gets a NACK, then the connection closes; a
request that only breaks its schema gets NACK INVALID_ARGUMENT and the connection goes on;
no client input can raise out of here. Slots, the handshake deadline and the idle timeout
are ``Connections``' rules (see its docstring).

(Over 600 lines on purpose: a connection's slots, flow control, output and request handlers
are one lifecycle, read together when reasoning about what a client can make the broker do.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

from tq.broker.access import Principal
from tq.broker.control import orders_info
from tq.broker.requests import PAGE_BYTES, Action, BulkResult, ListQuery, TaskFilter, Watch
from tq.broker.service import BrokerService, Durable
from tq.broker.streams import Stream
from tq.core.control import OrderAction
from tq.core.effects import TaskEvent as CoreEvent
from tq.core.ids import TaskId, WorkerId
from tq.core.replies import ClaimedTask
from tq.errors import (
    AuthError,
    ErrorCode,
    QueueFullError,
    TqError,
    UnavailableError,
    ValidationError,
)
from tq.protocol import (
    ACT_ITEM_BYTES,
    ACT_MESSAGE_MAX,
    LENGTH_PREFIX_SIZE,
    Ack,
    CancelReply,
    ClaimReply,
    FrameError,
    HeartbeatReply,
    InvalidMessage,
    ListReply,
    Pong,
    RegisterReply,
    Reply,
    ResultReply,
    ServerConnection,
    StatsReply,
    StatusReply,
    SubmitReply,
    TaskEvent,
    WorkersReply,
    encode,
)
from tq.protocol import messages as m
from tq.protocol.records import ActResult, KeyInfo, WorkerOrderInfo
from tq.protocol.records import ClaimedTask as WireClaimed

log = logging.getLogger(__name__)
DOOR = "tcp"  #: this door's name in the service's connection counters


NO_CLIENT_CERT = AuthError(
    "this broker requires a TLS client certificate signed by its auth.tls_ca_file (mutual "
    "TLS) and none was presented: set worker.tls_cert_file and worker.tls_key_file (or "
    "TlsConfig(cert_file=..., key_file=...))"
)
#: After its closing NACK a connection gets this long to take its pending output; then it is
#: reset, so a peer that reads nothing cannot keep a closed connection's socket and buffers.
CLOSE_GRACE_S = 5.0
#: The transport's write-buffer limits: above WRITE_HIGH unsent bytes it pauses us
#: (``pause_writing``), below WRITE_LOW it resumes. Small: the kernel's socket buffer is
#: under it already, so only a peer that is not reading gets this far.
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
#: What a reply frame holds beside its records (request id, cursor, map and array headers).
REPLY_OVERHEAD = 1024
#: Bytes reserved for a reply that waits for durability, plus per item of the request: about
#: its real size, so many pipelined submits count against the high-water mark too.
RESERVE = 64
RESERVE_ID = 19  # a task id (bin 8) and a bool or a small code


class Connections:
    """The live connections: their slots, the handshake deadline, idle sweeps and shutdown.

    A connection is *handshaking* from accept until its HELLO frame is decoded, then
    *established*. ``max_connections`` counts established ones only, checked when HELLO
    arrives. At most ``max_handshaking`` handshake at once, apart: a newcomer beyond them
    closes the oldest (a real client sends HELLO at once, a trickler does not), so sockets
    that never finish HELLO can neither take an established slot nor keep out new ones. Each
    must finish within ``handshake_timeout_s`` (a timer per connection, cancelled by HELLO:
    nothing per request). Idle means no complete frame for ``idle_timeout_s`` (the sweep),
    not counting time the broker spent not reading the connection (see ``close_idle``).
    """

    def __init__(self, service: BrokerService) -> None:
        b = service.settings.broker
        self.service = service
        self.stats = service.door_stats(DOOR)
        self.max_connections = b.max_connections
        self.max_handshaking = b.max_handshaking
        self.handshake_timeout = b.handshake_timeout_s
        auth = service.settings.auth
        #: Mutual TLS: a connection whose TLS handshake showed no certificate is refused here
        #: (``tq.broker.tls`` says why not at the handshake).
        self.client_cert_required = auth.tls_enabled and auth.require_client_cert
        #: Every connection not yet closing, handshaking or established.
        self.open: set[BrokerProtocol] = set()
        #: Handshaking connections, oldest first (a dict keeps insertion order), with their
        #: deadline timers.
        self.handshaking: dict[BrokerProtocol, asyncio.TimerHandle] = {}
        self.established = 0

    def accepted(self, conn: BrokerProtocol) -> None:
        """Start ``conn``'s handshake, first closing the oldest handshake if all are taken."""
        if len(self.handshaking) >= self.max_handshaking:
            oldest = next(iter(self.handshaking))
            self.stats.drop("evicted")
            log.debug("connection.evicted peer=%s reason=handshaking_full", oldest.peer)
            oldest.abort_with(
                UnavailableError(
                    f"no HELLO yet while {self.max_handshaking} connections were in their "
                    "handshake (broker.max_handshaking): closed to make room for a newer one",
                    ErrorCode.TOO_MANY_CONNECTIONS,
                )
            )
        loop = asyncio.get_running_loop()
        self.handshaking[conn] = loop.call_later(self.handshake_timeout, self._expired, conn)
        self.open.add(conn)
        self.stats.handshaking = len(self.handshaking)

    def _expired(self, conn: BrokerProtocol) -> None:
        if conn in self.handshaking:
            self.stats.drop("timeout")
            log.debug("connection.handshake_timeout peer=%s", conn.peer)
            conn.abort_with(
                UnavailableError(
                    f"no complete HELLO within {self.handshake_timeout:g} s of connecting "
                    "(broker.handshake_timeout_s)",
                    ErrorCode.TIMEOUT,
                )
            )

    def admit(self, conn: BrokerProtocol) -> bool:
        """HELLO arrived: ``conn`` takes an established slot, or (all taken) is refused and
        closed. False when refused."""
        if (timer := self.handshaking.pop(conn, None)) is not None:
            timer.cancel()
        self.stats.handshaking = len(self.handshaking)
        if self.established >= self.max_connections:
            self.stats.refused += 1
            log.warning("connection.refused peer=%s reason=limit", conn.peer)
            conn.abort_with(
                UnavailableError(
                    f"connection limit of {self.max_connections} reached (broker.max_connections)",
                    ErrorCode.TOO_MANY_CONNECTIONS,
                ),
                conn.conn.hello.request_id if conn.conn.hello is not None else None,
            )
            return False
        conn.admitted = True
        self.established += 1
        self.stats.established = self.established
        return True

    def release(self, conn: BrokerProtocol) -> None:
        """``conn`` is closing or closed: free its slot (idempotent)."""
        self.open.discard(conn)
        if (timer := self.handshaking.pop(conn, None)) is not None:
            timer.cancel()
            self.stats.handshaking = len(self.handshaking)
        if conn.admitted:
            conn.admitted = False
            self.established -= 1
            self.stats.established = self.established

    def close_idle(self, idle_timeout: float) -> None:
        """Close connections that sent no complete frame for ``idle_timeout``. Waiting on the
        broker (a subscription, a parked claim) does not count: the peer must still PING, or
        a silent socket could hold its slot for ever. Time the broker does not read a
        connection (flow control) is not the peer's silence: its frames wait unread. Such a
        connection is spared while it takes its output (``BrokerProtocol.drains``) and its
        clock restarts when reading resumes; one that takes nothing is closed after
        ``idle_timeout`` like a silent one."""
        now = time.monotonic()
        for conn in list(self.open):
            if conn.drains():
                conn.idle_from = now
            elif now - conn.idle_from > idle_timeout:
                conn.abort_with(
                    UnavailableError(
                        f"idle: no complete frame for more than {idle_timeout:g} s "
                        "(broker.idle_timeout_s)",
                        ErrorCode.TIMEOUT,
                    )
                )

    def close_all(self, why: TqError) -> None:
        for conn in list(self.open):
            conn.abort_with(why)


class BrokerProtocol(asyncio.Protocol):
    """One connection. Flow control bounds the memory a client can make the broker hold.

    Pending output is what the peer has not taken yet: bytes in the transport's buffer
    (``WRITE_HIGH`` at most before it pauses us), frames queued for this loop turn
    (``out_bytes``) and replies waiting for durability (``reserved``, an estimate per request
    taken when it is dispatched and given back when its reply is queued). A request is
    dispatched only while the transport is not paused and ``out_bytes + reserved`` is under
    ``broker.output_high_water_bytes``; the rest of a read waits parsed in ``waiting``, in
    order, and reading stops. Serving and reading resume once the transport resumes and
    ``out_bytes + reserved`` is at most a quarter of the mark. The cost per request is a
    comparison; per loop turn, one look at the transport's buffer. Pushed events cannot wait:
    past the mark plus two frames the connection is closed as a slow consumer.
    """

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
            idle_timeout=b.idle_timeout_s,
            max_wait_ms=round(b.max_long_poll_s * 1000),
        )
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        #: When the last complete frame arrived (accept until then).
        self.last_active = time.monotonic()
        #: Since when the peer has been silent as far as the idle sweep judges: the last
        #: complete frame, the end of a pause of reading, or a sweep that saw it draining.
        self.idle_from = self.last_active
        self.sent = 0  # bytes handed to the transport
        self.taken = 0  # of them, taken from the transport's buffer by the last sweep
        self.starved = False  # a claim met a budget of 0: wake parked claims once it drains
        self.peer = "?"
        self.admitted = False  # holds an established slot
        self.closed = False  # closing or closed: nothing more is sent or served
        self._reset: asyncio.TimerHandle | None = None  # the close grace's end
        #: The largest frame sent: the broker's own limit, then the lower one HELLO states.
        self.frame_limit = b.max_frame_size_bytes
        # Flow control (see the class docstring).
        self.high = b.output_high_water_bytes
        self.low = self.high // 4
        self.slow_limit = self.high + 2 * b.max_frame_size_bytes
        self.out_bytes = 0
        self.reserved = 0
        self.buffered = 0  # the transport's buffer after the last write
        self.write_paused = False
        self.reading = True
        self.stopped = False  # shutting down: waiting requests are never served
        self.waiting: deque[Any] = deque()
        #: The caller, from HELLO's api_key; requests after HELLO wait while it is verified.
        self.who: Principal = Principal.ANYONE
        self.verifying = False
        #: Held while the connection is authenticated by a key: its revocation or expiry
        #: closes the connection at once (subscriptions get no event past that instant).
        self.key_hold: Stream | None = None

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.peer = str(transport.get_extra_info("peername"))
        self.conns.accepted(self)
        if self.conns.client_cert_required and not transport.get_extra_info("peercert"):
            self.conns.stats.drop("no_client_cert")
            self.abort_with(NO_CLIENT_CERT)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.release(self)
        if self.key_hold is not None:
            self.key_hold.release()
        if self._reset is not None:
            self._reset.cancel()
        self.service.detach(self)
        self.transport = None
        self.closed = True
        self.waiting.clear()

    def pause_writing(self) -> None:
        # The peer reads slower than we answer: serve and read nothing until it catches up.
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None:
            self.buffered = self.transport.get_write_buffer_size()
        self._resume()
        if self.starved:
            self._wake_claims()

    def data_received(self, data: bytes) -> None:
        try:
            requests = self.conn.receive_data(data)
        except FrameError as e:
            if self._frames_arrived(e.messages):
                self._serve(e.messages)
            log.warning("connection.protocol_error peer=%s error=%s", self.peer, e)
            self.abort_with(e)
            return
        if self._frames_arrived(requests):
            self._serve(requests)

    def _frames_arrived(self, requests: list[Any]) -> bool:
        """Complete frames (never a partial one) reset the idle timer, and the first, HELLO,
        asks for an established slot. False: refused, the connection is closing."""
        if not requests:
            return True
        self.last_active = self.idle_from = time.monotonic()
        return self.admitted or self.conns.admit(self)

    # ------------------------------------------------------------------ flow control

    def _serve(self, requests: list[Any]) -> None:
        """Dispatch ``requests`` in order while the pending output allows; keep the rest."""
        if self.stopped:
            return
        if self.waiting:  # earlier requests still wait: order is kept
            self.waiting.extend(requests)
            return
        for i, req in enumerate(requests):
            if self.verifying or self.write_paused or self.out_bytes + self.reserved >= self.high:
                self.waiting.extend(requests[i:])
                self._pause_reading()
                return
            self.dispatch(req)

    def _resume(self) -> None:
        """Once the output is low again, serve waiting requests, then read again."""
        if self.closed or self.stopped or self.write_paused or self.verifying:
            return
        if self.out_bytes + self.reserved > self.low:
            return  # it falls further: the flush after each reply comes back here
        waiting = self.waiting
        while waiting:
            if self.write_paused or self.out_bytes + self.reserved >= self.high:
                return
            self.dispatch(waiting.popleft())
        if not self.reading and self.transport is not None:
            self.reading = True
            self.idle_from = time.monotonic()  # the pause was the broker's, not the peer's
            self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def stop(self) -> None:
        """Shutting down: read nothing more and drop the requests still waiting (never
        applied: their connection closes before they could be answered)."""
        self.stopped = True
        self.waiting.clear()
        self._pause_reading()

    def claim_budget(self) -> int:
        """Bytes a claim's reply may carry now: what fits the client's frame limit, or 0
        while the pending output is over the mark (a parked claim then waits, held until
        ``_wake_claims``)."""
        if self.closed or self.write_paused or self.out_bytes + self.reserved >= self.high:
            self.starved = True
            return 0
        return self.frame_limit - REPLY_OVERHEAD

    def _wake_claims(self) -> None:
        """Under the mark again: the parked claims held back claim now."""
        if not (self.closed or self.write_paused or self.out_bytes + self.reserved >= self.high):
            self.starved = False
            self.service.wake_claims(self)

    def drains(self) -> bool:
        """For the idle sweep: the broker is not reading this connection, and the peer took
        some of its output since the last sweep or awaits replies still being made durable.
        (Bytes the kernel accepted from the transport's buffer count as taken: a peer that
        reads nothing fills the kernel's buffers within a sweep or two.)"""
        t = self.transport
        taken = self.sent - (0 if t is None else t.get_write_buffer_size())
        moved, self.taken = taken > self.taken, taken
        return not self.reading and (moved or self.reserved > 0)

    # ------------------------------------------------------------------ output

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(frame)
        self.out_bytes += len(frame)

    def reply(self, msg: Reply) -> None:
        """Send a reply of variable size; one above the client's frame limit becomes a NACK
        REPLY_TOO_LARGE (the rules that size replies keep this rare)."""
        frame = encode(msg)
        if len(frame) - LENGTH_PREFIX_SIZE > self.frame_limit:
            err = ValidationError(
                f"the {msg.type_code.name} of {len(frame) - LENGTH_PREFIX_SIZE} bytes would "
                f"exceed the client's frame limit of {self.frame_limit} bytes (the lower of "
                "HELLO's max_frame_size and the broker's): ask for less at a time",
                ErrorCode.REPLY_TOO_LARGE,
            )
            frame = self.conn.nack(err, msg.request_id)
        self.send(frame)

    def _flush(self) -> None:
        t = self.transport
        if t is not None and self.out:
            t.write(b"".join(self.out))
            self.sent += self.out_bytes
            self.buffered = t.get_write_buffer_size()
        self.out.clear()
        self.out_bytes = 0
        if self.waiting or not self.reading:
            self._resume()
        if self.starved:
            self._wake_claims()

    def abort_with(self, error: TqError, request_id: int | None = None) -> None:
        """NACK ``error`` (for ``request_id``, else the whole connection) after what was
        queued, and close; reset the connection if the peer has not taken it all within
        CLOSE_GRACE_S. Requests still waiting are dropped, never applied."""
        self.waiting.clear()
        if self.transport is None:
            return
        self.closed = True
        if not self.transport.is_closing():
            self.out.append(self.conn.nack(error, request_id))
            self._flush()
            self.transport.close()
            loop = asyncio.get_running_loop()
            self._reset = loop.call_later(CLOSE_GRACE_S, self.transport.abort)
        self.conns.release(self)

    def after(
        self, durable: Durable, make: Callable[[], Any], request_id: int, reserve: int = RESERVE
    ) -> None:
        """Send ``make()`` once ``durable`` resolves (a NACK if the batch could not be made
        durable); ``reserve`` bytes count as pending output until then."""
        self.reserved += reserve

        def done(f: Durable) -> None:
            self.reserved -= reserve
            if f.exception() is not None:
                err = f.exception()
                assert isinstance(err, TqError)
                self.send(self.conn.nack(err, request_id))
            else:
                self.reply(make())

        durable.add_done_callback(done)

    def push_event(self, subscription_id: int, ev: CoreEvent) -> None:
        """Queue an event; one above the client's frame limit goes without its texts and
        result (``truncated``); past the slow-consumer limit the connection is closed."""
        if self.closed:
            return
        frame = encode(
            TaskEvent(
                subscription_id=subscription_id, task_id=ev.task_id, state=ev.state.value,
                queue=ev.queue, task_type=ev.task_type, at=ev.at, attempts=ev.attempts,
                result=ev.result, error=ev.error, progress=ev.progress,
                progress_message=ev.progress_message, error_type=ev.error_type,
            )
        )  # fmt: skip
        if len(frame) - LENGTH_PREFIX_SIZE > self.frame_limit:
            frame = encode(
                TaskEvent(
                    subscription_id=subscription_id, task_id=ev.task_id, state=ev.state.value,
                    queue=ev.queue, task_type=ev.task_type, at=ev.at, attempts=ev.attempts,
                    progress=ev.progress, truncated=True,
                )
            )  # fmt: skip
        if self.out_bytes + self.reserved + self.buffered + len(frame) > self.slow_limit:
            if self.transport is not None:  # the last sample may be stale: look again
                self.buffered = self.transport.get_write_buffer_size()
            pending = self.out_bytes + self.reserved + self.buffered
            if pending + len(frame) > self.slow_limit:
                log.warning("connection.slow_consumer peer=%s pending=%d", self.peer, pending)
                self.abort_with(
                    QueueFullError(
                        f"slow consumer: {pending} bytes of replies and events not taken yet "
                        f"(more than {self.slow_limit}: broker.output_high_water_bytes plus "
                        "two frames); read faster or subscribe to less, then subscribe again"
                    )
                )
                return
        self.send(frame)

    def watch_ended(self, subscription_id: int) -> None:
        """A one-shot subscription is over; the client knows from the terminal events."""

    def push_orders(self, worker_id: str, orders: list[WorkerOrderInfo]) -> None:
        """A worker heard on this connection was given an order (``tq.broker.control``)."""
        if not self.closed:
            self.send(encode(m.WorkerOrders(worker_id=worker_id, orders=orders)))

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
    p.frame_limit = p.conn.peer_max_frame_size
    if not p.service.settings.auth.enabled:
        p.send(p.conn.welcome())
        return
    # Verified once per connection (bcrypt in a thread on a cache miss); the requests that
    # follow wait, in order, until the caller is known.
    p.verifying = True
    task = asyncio.get_running_loop().create_task(p.service.authenticate(req.api_key))
    _VERIFYING.add(task)

    def verified(t: asyncio.Task[Principal]) -> None:
        _VERIFYING.discard(t)
        p.verifying = False
        if p.closed or t.cancelled():
            return
        err = t.exception()
        if err is not None:
            why = err if isinstance(err, TqError) else TqError(f"internal error: {err!r}")
            log.info("connection.unauthenticated peer=%s why=%s", p.peer, why.message)
            p.abort_with(why, req.request_id)
            return
        p.who = t.result()
        if p.who.key_id is not None:
            p.key_hold = p.service.hold(p.who, lambda why: _key_ended(p, why))
        p.send(p.conn.welcome())
        p._resume()

    task.add_done_callback(verified)


def _key_ended(p: BrokerProtocol, why: TqError) -> None:
    """The connection's key was revoked or expired: NACK the whole connection and close it."""
    p.key_hold = None
    log.info("connection.key_ended peer=%s why=%s", p.peer, why.message)
    p.abort_with(why)


#: Verifications and key requests under way (a reference, so none is collected early).
_VERIFYING: set[asyncio.Task[Any]] = set()


def _invalid(p: BrokerProtocol, req: InvalidMessage) -> None:
    """A request whose payload broke its schema: a request error, the connection stays."""
    p.send(p.conn.nack(req.error(), req.request_id))


def _ping(p: BrokerProtocol, req: m.Ping) -> None:
    p.send(encode(Pong(request_id=req.request_id)))


def _submit(p: BrokerProtocol, req: m.SubmitTask) -> None:
    n = len(req.tasks)
    reserve = RESERVE + RESERVE_ID * n  # at least the SUBMIT_REPLY's size
    if reserve > p.frame_limit:  # refused before anything is applied
        raise ValidationError(
            f"SUBMIT_TASK of {n} tasks: its SUBMIT_REPLY would exceed the client's frame limit "
            f"of {p.frame_limit} bytes; submit at most "
            f"{(p.frame_limit - RESERVE) // RESERVE_ID} tasks per request",
            ErrorCode.REPLY_TOO_LARGE,
        )
    # Latency is measured from the read that carried the request.
    reply, durable = p.service.submit(p.who, req.tasks, received=p.last_active)
    rid = req.request_id
    p.after(
        durable,
        lambda: SubmitReply(request_id=rid, ids=reply.ids, created=reply.created),
        rid,
        reserve,
    )


def _claim(p: BrokerProtocol, req: m.ClaimTask) -> None:
    rid = req.request_id

    def respond(tasks: list[ClaimedTask]) -> None:
        p.reply(ClaimReply(request_id=rid, tasks=[_wire(t) for t in tasks]))

    def refuse(err: TqError) -> None:
        p.send(p.conn.nack(err, rid))

    p.service.claim(
        p.who, WorkerId(req.worker_id), req.queues, req.max_tasks, req.wait_ms / 1000, respond, p,
        received=p.last_active, budget=p.claim_budget, refuse=refuse,
    )  # fmt: skip


def _wire(t: ClaimedTask) -> WireClaimed:
    return WireClaimed(
        id=t.id, task_type=t.task_type, queue=t.queue, payload=t.payload, priority=t.priority,
        attempts=t.attempts, max_retries=t.max_retries, timeout=t.timeout,
        lease_token=t.lease_token, lease_expires_at=t.lease_expires_at,
        created_at=t.created_at, tags=t.tags,
    )  # fmt: skip


def _result(p: BrokerProtocol, req: m.TaskResult) -> None:
    codes, durable = p.service.report(p.who, req.results)
    rid = req.request_id
    p.after(
        durable, lambda: ResultReply(request_id=rid, codes=codes), rid, RESERVE + 3 * len(codes)
    )


def _progress(p: BrokerProtocol, req: m.Progress) -> None:
    durable = p.service.progress(p.who, req.task_id, req.lease_token, req.percent, req.message)
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


def _release(p: BrokerProtocol, req: m.ReleaseTasks) -> None:
    leases = [(lease.task_id, lease.lease_token) for lease in req.leases]
    durable = p.service.release(p.who, WorkerId(req.worker_id), leases)
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


def _status(p: BrokerProtocol, req: m.QueryStatus) -> None:
    budget = p.frame_limit - REPLY_OVERHEAD
    infos = p.service.status(p.who, req.task_ids, req.include_payload, max_bytes=budget)
    p.reply(StatusReply(request_id=req.request_id, tasks=infos))


def _cancel(p: BrokerProtocol, req: m.CancelTask) -> None:
    codes, durable = p.service.cancel(p.who, req.task_ids)
    rid = req.request_id
    p.after(
        durable, lambda: CancelReply(request_id=rid, codes=codes), rid, RESERVE + 3 * len(codes)
    )


def _filter(req: m.ListTasks | m.ActOnFilter) -> TaskFilter:
    return TaskFilter.build(
        state=req.state, queue=req.queue, task_type=req.task_type,
        priority_min=req.priority_min, priority_max=req.priority_max,
        created_after=req.created_after, created_before=req.created_before,
    )  # fmt: skip


def _list(p: BrokerProtocol, req: m.ListTasks) -> None:
    f = _filter(req)
    budget = min(PAGE_BYTES, p.frame_limit - REPLY_OVERHEAD)
    infos, cursor = p.service.list_tasks(p.who, ListQuery(f, req.cursor, req.limit, budget))
    p.reply(ListReply(request_id=req.request_id, tasks=infos, next_cursor=cursor))


def _stats(p: BrokerProtocol, req: m.GetStats) -> None:
    p.reply(StatsReply(request_id=req.request_id, stats=p.service.stats(p.who)))


def _cluster_status(p: BrokerProtocol, req: m.GetClusterStatus) -> None:
    status = p.service.cluster_status(p.who)
    p.reply(m.ClusterStatusReply(request_id=req.request_id, status=status))


def _subscribe(p: BrokerProtocol, req: m.Subscribe) -> None:
    ids = tuple(TaskId(i) for i in req.task_ids)
    watch = Watch(ids, tuple(req.queues), req.all, req.until_terminal)
    p.service.watch(p.who, p, req.request_id, watch)
    p.send(encode(Ack(request_id=req.request_id)))


def _unsubscribe(p: BrokerProtocol, req: m.Unsubscribe) -> None:
    p.service.unwatch(p.who, p, req.subscription_id)
    p.send(encode(Ack(request_id=req.request_id)))


def _workers(p: BrokerProtocol, req: m.ListWorkers) -> None:
    p.reply(WorkersReply(request_id=req.request_id, workers=p.service.workers(p.who)))


def _register(p: BrokerProtocol, req: m.RegisterWorker) -> None:
    worker_id = WorkerId(req.worker_id)
    durable = p.service.register(
        p.who, worker_id, name=req.name, queues=req.queues, concurrency=req.concurrency,
        hostname=req.hostname, pid=req.pid, acked=req.acked, reach=p,
    )  # fmt: skip
    b = p.service.settings.broker
    p.after(
        durable,
        lambda: RegisterReply(
            request_id=req.request_id,
            worker_id=req.worker_id,
            lease_duration=b.lease_duration_s,
            heartbeat_interval=b.heartbeat_interval_s,
            orders=p.service.pending_orders(worker_id),
        ),
        req.request_id,
        RESERVE + 4 * len(req.worker_id),
    )


def _heartbeat(p: BrokerProtocol, req: m.Heartbeat) -> None:
    reply, cancelled, durable = p.service.heartbeat(
        p.who,
        WorkerId(req.worker_id),
        req.cpu_percent,
        req.memory_rss,
        [TaskId(i) for i in req.running],
        started=[TaskId(i) for i in req.started],
        draining=req.draining,
        acked=req.acked,
        reach=p,
    )
    gone = [i for i in reply.unknown if i not in cancelled]
    orders = orders_info(reply.orders)
    p.after(
        durable,
        lambda: HeartbeatReply(
            request_id=req.request_id,
            lease_expires_at=reply.lease_expires_at,
            cancelled=cancelled,
            unknown=gone,
            orders=orders,
        ),
        req.request_id,
        RESERVE + RESERVE_ID * len(reply.unknown),
    )


def _deregister(p: BrokerProtocol, req: m.DeregisterWorker) -> None:
    durable = p.service.deregister(p.who, WorkerId(req.worker_id))
    p.after(durable, lambda: Ack(request_id=req.request_id), req.request_id)


def _later(
    p: BrokerProtocol,
    work: Coroutine[Any, Any, Any],
    make: Callable[[Any], Any],
    rid: int,
    reserve: int = RESERVE,
) -> None:
    """Run ``work`` (a use case that awaits: bcrypt, durability) and answer ``make(result)``,
    or NACK its error; ``reserve`` bytes count as pending output meanwhile."""
    name = getattr(work, "__qualname__", "request")
    task = asyncio.get_running_loop().create_task(work)
    _VERIFYING.add(task)
    p.reserved += reserve

    def done(t: asyncio.Task[Any]) -> None:
        _VERIFYING.discard(t)
        p.reserved -= reserve
        if p.closed or t.cancelled():
            return
        err = t.exception()
        if err is None:
            p.reply(make(t.result()))
        elif isinstance(err, TqError):
            p.send(p.conn.nack(err, rid))
        else:
            log.error("request.crashed type=%s peer=%s error=%r", name, p.peer, err)
            p.send(p.conn.nack(TqError(f"internal error: {type(err).__name__}"), rid))

    task.add_done_callback(done)


def _key_create(p: BrokerProtocol, req: m.KeyCreate) -> None:
    rid = req.request_id

    def make(made: tuple[KeyInfo, str]) -> m.KeyCreateReply:
        return m.KeyCreateReply(request_id=rid, key=made[0], secret=made[1])

    _later(p, p.service.create_key(p.who, req.key), make, rid)


def _key_list(p: BrokerProtocol, req: m.KeyList) -> None:
    p.reply(m.KeyListReply(request_id=req.request_id, keys=p.service.list_keys(p.who)))


def _key_revoke(p: BrokerProtocol, req: m.KeyRevoke) -> None:
    rid = req.request_id
    _later(
        p,
        p.service.revoke_key(p.who, req.key_id),
        lambda key: m.KeyRevokeReply(request_id=rid, key=key),
        rid,
    )


def _act_reserve(p: BrokerProtocol, tasks: int, what: str) -> int:
    """The ACT_REPLY's bound for ``tasks`` tasks; REPLY_TOO_LARGE, before anything is done,
    when it could exceed the client's frame limit."""
    bound = REPLY_OVERHEAD + tasks * ACT_ITEM_BYTES
    if bound > p.frame_limit:
        most = (p.frame_limit - REPLY_OVERHEAD) // ACT_ITEM_BYTES
        raise ValidationError(
            f"{what} of {tasks} tasks: its ACT_REPLY could exceed the client's frame limit of "
            f"{p.frame_limit} bytes ({ACT_ITEM_BYTES} bytes a task); at most {most} per request",
            ErrorCode.REPLY_TOO_LARGE,
        )
    return bound


def _clip(text: str, most: int) -> str:
    """``text`` within ``most`` bytes of UTF-8, never splitting a character."""
    raw = text.encode()
    return text if len(raw) <= most else raw[:most].decode(errors="ignore")


def _act_reply(rid: int, result: BulkResult) -> m.ActReply:
    items = [
        ActResult(task_id=r.task_id, code=r.code, message=_clip(r.message, ACT_MESSAGE_MAX))
        for r in result.results
    ]
    return m.ActReply(request_id=rid, results=items, next_cursor=result.next_cursor)


def _act(p: BrokerProtocol, req: m.ActOnTasks) -> None:
    reserve = _act_reserve(p, len(req.task_ids), "ACT_ON_TASKS")
    rid = req.request_id
    work = p.service.act(p.who, Action(req.action), [TaskId(i) for i in req.task_ids])
    _later(p, work, lambda result: _act_reply(rid, result), rid, reserve)


def _act_filter(p: BrokerProtocol, req: m.ActOnFilter) -> None:
    reserve = _act_reserve(p, req.limit, "ACT_ON_FILTER with a limit")
    rid = req.request_id
    f = _filter(req)
    work = p.service.act_on_filter(p.who, Action(req.action), f, req.limit, req.cursor)
    _later(p, work, lambda result: _act_reply(rid, result), rid, reserve)


def _schedule_create(p: BrokerProtocol, req: m.ScheduleCreate) -> None:
    rid = req.request_id
    _later(
        p,
        p.service.create_schedule(p.who, req.schedule, req.replace),
        lambda s: m.ScheduleReply(request_id=rid, schedule=s),
        rid,
    )


def _schedule_list(p: BrokerProtocol, req: m.ScheduleList) -> None:
    found = p.service.list_schedules(p.who)
    p.reply(m.ScheduleListReply(request_id=req.request_id, schedules=found))


def _schedule_get(p: BrokerProtocol, req: m.ScheduleGet) -> None:
    found = p.service.get_schedule(p.who, req.name)
    p.reply(m.ScheduleReply(request_id=req.request_id, schedule=found))


def _schedule_action(
    p: BrokerProtocol, req: m.SchedulePause | m.ScheduleResume | m.ScheduleDelete
) -> None:
    rid = req.request_id
    act = {
        m.SchedulePause: p.service.pause_schedule,
        m.ScheduleResume: p.service.resume_schedule,
        m.ScheduleDelete: p.service.delete_schedule,
    }[type(req)]
    _later(p, act(p.who, req.name), lambda s: m.ScheduleReply(request_id=rid, schedule=s), rid)


def _queue_pause(p: BrokerProtocol, req: m.QueuePause | m.QueueResume) -> None:
    rid, paused = req.request_id, isinstance(req, m.QueuePause)
    _later(
        p,
        p.service.pause_queue(p.who, req.queue, paused=paused),
        lambda state: m.QueueStateReply(request_id=rid, state=state),
        rid,
    )


def _limit_set(p: BrokerProtocol, req: m.LimitSet) -> None:
    rid = req.request_id
    _later(
        p,
        p.service.set_limit(p.who, req.limit),
        lambda info: m.LimitSetReply(request_id=rid, limit=info),
        rid,
    )


def _limit_clear(p: BrokerProtocol, req: m.LimitClear) -> None:
    rid = req.request_id
    _later(p, p.service.clear_limit(p.who, req.scope, req.name), lambda _: Ack(request_id=rid), rid)


def _limit_list(p: BrokerProtocol, req: m.LimitList) -> None:
    p.reply(m.LimitListReply(request_id=req.request_id, limits=p.service.limits(p.who)))


def _worker_inspect(p: BrokerProtocol, req: m.WorkerInspect) -> None:
    found = p.service.inspect_worker(p.who, WorkerId(req.worker_id))
    p.reply(
        m.WorkerInspectReply(
            request_id=req.request_id, worker=found.worker, running=found.running,
            reserved=found.reserved, orders=found.orders,
        )
    )  # fmt: skip


def _worker_control(p: BrokerProtocol, req: m.WorkerControl) -> None:
    rid = req.request_id
    _later(
        p,
        p.service.control_worker(
            p.who, WorkerId(req.worker_id), OrderAction(req.action), req.queue
        ),
        lambda done: m.WorkerControlReply(request_id=rid, order=done.order, pending=done.pending),
        rid,
    )


_HANDLERS: dict[type, Callable[[BrokerProtocol, Any], None]] = {
    InvalidMessage: _invalid,
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
    m.GetClusterStatus: _cluster_status,
    m.Subscribe: _subscribe,
    m.Unsubscribe: _unsubscribe,
    m.ListWorkers: _workers,
    m.RegisterWorker: _register,
    m.Heartbeat: _heartbeat,
    m.DeregisterWorker: _deregister,
    m.KeyCreate: _key_create,
    m.KeyList: _key_list,
    m.KeyRevoke: _key_revoke,
    m.WorkerInspect: _worker_inspect,
    m.WorkerControl: _worker_control,
    m.QueuePause: _queue_pause,
    m.QueueResume: _queue_pause,
    m.LimitSet: _limit_set,
    m.LimitClear: _limit_clear,
    m.LimitList: _limit_list,
    m.ActOnTasks: _act,
    m.ActOnFilter: _act_filter,
    m.ScheduleCreate: _schedule_create,
    m.ScheduleList: _schedule_list,
    m.ScheduleGet: _schedule_get,
    m.SchedulePause: _schedule_action,
    m.ScheduleResume: _schedule_action,
    m.ScheduleDelete: _schedule_action,
}
