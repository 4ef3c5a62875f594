"""One TCP connection to a broker: an asyncio Protocol around the sans-I/O ``ClientConnection``.

Theory of operation: requests are pipelined. Each gets a fresh request id and a future in
``_pending``; ``data_received`` decodes replies and resolves futures by request id (replies may
come in any order) and routes pushed TASK_EVENTs to callbacks by ``subscription_id``. Frames
written in one loop turn are coalesced into one ``transport.write`` by a ``call_soon`` flush.
Every request is validated by decoding it before it is sent: a bad value becomes a
ValidationError for that caller instead of a protocol error that would close the connection
under every other request. When the connection goes, every pending request fails with
``ConnectionLostError`` and the owner is told through ``on_lost``; nothing here reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Final, Literal, TypeVar, cast

from tq.client.address import DEFAULT_PORT, BrokerAddress
from tq.client.tls import certificate_refused, handshake_error
from tq.errors import (
    AuthError,
    ErrorCode,
    ProtocolError,
    TqError,
    UnavailableError,
    ValidationError,
    error_for_code,
)
from tq.protocol import (
    LENGTH_PREFIX_SIZE,
    MAX_WAIT_MS,
    Ack,
    ClientConnection,
    FrameError,
    Nack,
    Ping,
    Push,
    Reply,
    Request,
    Subscribe,
    TaskEvent,
    Unsubscribe,
    Welcome,
    WorkerOrders,
    decode_payload,
    encode,
)
from tq.protocol.peers import ForeignPeerError
from tq.protocol.registry import REPLY_CLASSES

log = logging.getLogger(__name__)

#: A PING after this many idle seconds keeps a connection open: half the protocol's default
#: idle timeout (30 s). A broker that advertises a shorter one in WELCOME gets PINGs at half
#: of that instead.
KEEPALIVE_INTERVAL: Final = 15.0

R = TypeVar("R", bound=Reply)
EventCallback = Callable[[TaskEvent], None]
OrdersCallback = Callable[[WorkerOrders], None]


class ConnectionLostError(UnavailableError):
    """The connection closed while a request was outstanding: its outcome is unknown."""


class ReplyTimeoutError(UnavailableError):
    """No reply came within the request's time (code TIMEOUT): its outcome is unknown. Its
    own class tells it from a TIMEOUT the broker answered."""


def _validate(frame: bytes) -> None:
    """Decode ``frame`` as the broker will: a constraint it breaks is named with its path."""
    try:
        decode_payload(frame[LENGTH_PREFIX_SIZE], memoryview(frame)[LENGTH_PREFIX_SIZE + 1 :])
    except FrameError as e:
        raise ValidationError(e.message) from None


def _nack_error(msg: Nack) -> TqError:
    return error_for_code(msg.code, msg.message, retry_after=msg.retry_after, leader=msg.leader)


def _foreign_peer_error(address: BrokerAddress, e: ForeignPeerError) -> ProtocolError:
    """Another kind of server on that port: say what it looks like and where tq listens."""
    where = f"the broker's tq port is broker.port (default {DEFAULT_PORT})"
    if e.peer == "an HTTP server":
        where = f"is that the REST port? {where}"
    return ProtocolError(f"{address.url} answered like {e.peer}, not a tq broker: {where}")


class Connection(asyncio.Protocol):
    """A handshaken connection; ``open()`` makes one, ``request()`` talks over it."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_name: str,
        client_kind: Literal["client", "worker"],
        api_key: str | None,
        on_lost: Callable[[Connection, TqError], None] | None = None,
    ) -> None:
        self.address = address
        self._proto = ClientConnection(
            client_name=client_name, client_kind=client_kind, api_key=api_key
        )
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._subscriptions: dict[int, EventCallback] = {}
        #: A worker's listener for the orders the broker pushes (``tq.client.control``).
        self.on_orders: OrdersCallback | None = None
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._open = False
        #: The client moved away (``retire``): close once nothing is outstanding.
        self._retiring = False
        self._lost_reason: TqError | None = None
        self._last_write = self._loop.time()
        self._keepalive: asyncio.TimerHandle | None = None
        self._keepalive_interval = KEEPALIVE_INTERVAL
        #: We present a TLS client certificate (or may: a caller's own SSLContext).
        self._client_cert = False

    @classmethod
    async def open(
        cls,
        address: BrokerAddress,
        *,
        timeout: float,
        client_name: str = "",
        client_kind: Literal["client", "worker"] = "client",
        api_key: str | None = None,
        on_lost: Callable[[Connection, TqError], None] | None = None,
        keepalive: float = KEEPALIVE_INTERVAL,
        ssl_context: ssl.SSLContext | None = None,
        client_cert: bool = False,
    ) -> Connection:
        """Connect and handshake within ``timeout``; UnavailableError if the broker is out of
        reach, the broker's NACK (AuthError, ProtocolError) if it refuses us. A ``tqs://``
        address uses ``ssl_context`` (``tq.client.tls``), else the system's CAs."""
        loop = asyncio.get_running_loop()
        conn = cls(address, client_name=client_name, client_kind=client_kind, api_key=api_key)
        conn._keepalive_interval = keepalive
        conn._client_cert = client_cert
        context = (ssl_context or ssl.create_default_context()) if address.tls else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, address.host, address.port, ssl=context)
                await conn._handshake()
        except TimeoutError:
            conn.close()
            raise UnavailableError(
                f"no connection to {address.url} within {timeout:g} s", ErrorCode.TIMEOUT
            ) from None
        except ssl.SSLError as e:  # before OSError, its base: no retry makes a handshake work
            conn.close()
            raise handshake_error(address.url, e) from e
        except OSError as e:
            conn.close()
            raise UnavailableError(f"cannot connect to {address.url}: {e}") from e
        except BaseException:
            conn.close()
            raise
        conn._on_lost = on_lost
        return conn

    async def _handshake(self) -> None:
        frame = self._proto.hello()
        # hello() took the first request id; it is the only one outstanding.
        (rid,) = self._proto.outstanding
        fut = self._pending[rid] = self._loop.create_future()
        self._write(frame)
        reply = await fut
        assert isinstance(reply, Welcome)  # ClientConnection checked the reply type
        self._open = True
        # Half the broker's idle timeout: a PING then always lands well before it, even when
        # a keepalive tick comes late on a busy loop.
        self._keepalive_interval = min(self._keepalive_interval, reply.idle_timeout / 2)
        self._arm_keepalive(self._keepalive_interval)

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def welcome(self) -> Welcome | None:
        return self._proto.welcome

    @property
    def max_frame_size(self) -> int:
        """The largest frame the broker accepts (from WELCOME)."""
        return self._proto.peer_max_frame_size

    @property
    def reply_frame_size(self) -> int:
        """The largest frame the broker sends us: the lower of its limit and ours (which
        HELLO stated)."""
        return min(self._proto.max_frame_size, self._proto.peer_max_frame_size)

    @property
    def max_wait(self) -> float:
        """The longest claim long poll the broker honours, in seconds (from WELCOME)."""
        welcome = self._proto.welcome
        return (MAX_WAIT_MS if welcome is None else welcome.max_wait_ms) / 1000

    async def request(self, build: Callable[[int], Request], expect: type[R], timeout: float) -> R:
        """Send ``build(request_id)`` and return its reply; a NACK is raised as its TqError."""
        try:
            async with asyncio.timeout(timeout):
                if not self._writable.is_set():
                    await self._writable.wait()  # the socket buffer is full: back-pressure
                rid, fut = self._send(build)
                try:
                    reply = await fut
                finally:
                    self._pending.pop(rid, None)
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply from {self.address.url} within {timeout:g} s", ErrorCode.TIMEOUT
            ) from None
        finally:
            if self._retiring and not self._pending:
                self._loop.call_soon(self._close_if_idle)
        if not isinstance(reply, expect):
            raise ProtocolError(f"expected {expect.__name__}, got {type(reply).__name__}")
        return reply

    def request_nowait(self, build: Callable[[int], Request]) -> asyncio.Future[Reply]:
        """Send now; the future gets the reply (a NACK as its TqError). No per-request timer:
        the pipelining fast path. The future fails when the connection is lost."""
        return self._send(build)[1]

    def _send(self, build: Callable[[int], Request]) -> tuple[int, asyncio.Future[Reply]]:
        if not self._open:
            raise self._lost_error()
        rid = self._proto.next_request_id()
        msg = build(rid)
        frame = encode(msg)  # encoded once: validated here, then sent as is
        _validate(frame)
        self._proto.send(msg, frame)
        fut: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[rid] = fut
        self._write(frame)
        return rid, fut

    def notify(self, build: Callable[[int], Request]) -> None:
        """Send without waiting: the reply, or a NACK, is dropped when it arrives."""
        if self._open:
            rid = self._proto.next_request_id()
            self._write(self._proto.send(build(rid)))

    async def subscribe(
        self, build: Callable[[int], Subscribe], on_event: EventCallback, timeout: float
    ) -> int:
        """Subscribe; returns the subscription id. Events may flow before this returns."""
        sid = 0

        def register(rid: int) -> Subscribe:
            nonlocal sid
            sid = rid
            # Before the frame goes out: its first event can arrive in the ACK's own chunk.
            self._subscriptions[rid] = on_event
            return build(rid)

        try:
            await self.request(register, Ack, timeout)
        except BaseException:
            self._subscriptions.pop(sid, None)
            raise
        return sid

    def unsubscribe(self, subscription_id: int) -> None:
        """Stop routing events to the subscription and tell the broker (without waiting)."""
        if self._subscriptions.pop(subscription_id, None) is not None:
            self.notify(lambda rid: Unsubscribe(request_id=rid, subscription_id=subscription_id))

    def retire(self, grace: float) -> None:
        """Take no new requests and close once the outstanding ones are answered (their
        replies still count), or after ``grace`` seconds: the client moved to another node."""
        self._retiring = True
        if not self._pending:
            self.close()
        else:
            self._loop.call_later(grace, self.close)

    def _close_if_idle(self) -> None:
        if not self._pending:
            self.close()

    def close(self) -> None:
        self._fail(UnavailableError(f"connection to {self.address.url} closed by the client"))
        if self._transport is not None:
            self._transport.close()

    # --- writing ---------------------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        self._wbuf.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_write = self._loop.time()

    def _arm_keepalive(self, delay: float) -> None:
        self._keepalive = self._loop.call_later(delay, self._on_keepalive)

    def _on_keepalive(self) -> None:
        if not self._open:
            return
        interval = self._keepalive_interval
        idle = self._loop.time() - self._last_write
        if idle >= interval * 0.9:
            self.notify(lambda rid: Ping(request_id=rid))
            idle = 0.0
        self._arm_keepalive(interval - idle)

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self._proto.receive_data(data)
        except ForeignPeerError as e:
            self._abort(_foreign_peer_error(self.address, e))
            return
        except FrameError as e:
            for msg in e.messages:  # the valid frames before the bad one still count
                if isinstance(msg, TaskEvent | WorkerOrders) or isinstance(msg, REPLY_CLASSES):  # noqa: SIM101
                    self._dispatch(msg)
            self._abort(ProtocolError(f"broker sent a bad frame: {e.message}", e.code))
            return
        for msg in msgs:
            self._dispatch(msg)

    def _dispatch(self, msg: Reply | Push) -> None:
        if isinstance(msg, WorkerOrders):
            if self.on_orders is not None:
                try:
                    self.on_orders(msg)
                except Exception:  # a listener's bug must not break the connection
                    log.exception("orders.callback_failed worker=%s", msg.worker_id)
            return
        if isinstance(msg, TaskEvent):
            callback = self._subscriptions.get(msg.subscription_id)
            if callback is not None:
                try:
                    callback(msg)
                except Exception:  # a subscriber's bug must not break the connection
                    log.exception("subscription.callback_failed id=%d", msg.subscription_id)
            return
        if isinstance(msg, Nack) and msg.request_id == 0:
            self._abort(_nack_error(msg))
            return
        fut = self._pending.pop(msg.request_id, None)
        if fut is None or fut.done():
            return  # timed out, cancelled, or sent with notify()
        if isinstance(msg, Nack):
            fut.set_exception(_nack_error(msg))
        else:
            fut.set_result(msg)
        if self._retiring and not self._pending:
            # Once the waiters of this read have their replies (and may send again).
            self._loop.call_soon(self._close_if_idle)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError) and not self._open:
            # Under TLS 1.3 a broker refuses our certificate after our side of the handshake
            # is done: its alert ends the wait for WELCOME.
            self._fail(handshake_error(self.address.url, exc))
            return
        if self._client_cert and self.address.tls and not self._open:
            # ... or, more often, a reset: the broker's TLS gives up without a word.
            self._fail(certificate_refused(self.address.url, exc))
            return
        reason = self._lost_reason or UnavailableError(
            f"connection to {self.address.url} closed" + (f": {exc}" if exc else "")
        )
        self._fail(reason)

    def _abort(self, reason: TqError) -> None:
        self._fail(reason)
        if self._transport is not None:
            self._transport.abort()

    def _lost_error(self) -> ConnectionLostError:
        reason = self._lost_reason
        message = reason.message if reason else f"connection to {self.address.url} is not open"
        code = reason.code if isinstance(reason, UnavailableError) else None
        return ConnectionLostError(message, code)

    def _fail(self, reason: TqError) -> None:
        """Close down once: fail every pending request, wake writers, tell the owner."""
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        was_open, self._open = self._open, False
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._subscriptions.clear()
        self._writable.set()  # waiters wake, see the connection closed and fail
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                # The handshake's own failure (a refused HELLO) is the broker's NACK itself, and
                # so is a key ended while open (revoked, expired): retrying would not help.
                final = not was_open or isinstance(reason, AuthError)
                fut.set_exception(reason if final else self._lost_error())
        if was_open and self._on_lost is not None:
            self._on_lost(self, reason)
