"""The TCP door's listener when TLS is on: it tells a TLS client from a plaintext one by the
first byte, before any is read.

A TLS connection starts with a handshake record (0x16); a tq frame starts with its length,
whose first byte is 0 for any frame under 16 MiB. So each accepted socket is peeked (MSG_PEEK:
nothing is consumed), then either handed to the event loop's TLS (``connect_accepted_socket``
with the broker's SSLContext, the same transport a plain ``create_server(ssl=...)`` makes) to
become a ``BrokerProtocol``, or answered in plaintext with NACK PROTOCOL_ERROR "this port speaks
TLS" and closed. Until its TLS handshake is done a connection counts against
``broker.max_handshaking`` (a newcomer beyond it closes the oldest) and must finish within
``broker.handshake_timeout_s``; after it, ``Connections`` applies its own rules from accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from tq.broker.service import DoorStats
from tq.errors import ErrorCode, ProtocolError
from tq.protocol import nack_frame

log = logging.getLogger(__name__)

#: First byte of a TLS handshake record (a ClientHello).
TLS_HANDSHAKE = 0x16
PLAINTEXT_REFUSAL = ProtocolError(
    "this port speaks TLS: connect with tqs:// (the broker has auth.tls_cert_file set)",
    ErrorCode.PROTOCOL_ERROR,
)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on the first address ``host`` resolves to (as the HTTP door binds)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


class TlsListener:
    """Accepts on ``sockets`` and starts each connection as above; ``close``/``wait_closed``
    as an ``asyncio.Server``'s (what the broker's shutdown calls)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        factory: Callable[[], asyncio.Protocol],
        stats: DoorStats,
        *,
        handshake_timeout: float,
        max_handshaking: int,
    ) -> None:
        self.sockets = sockets
        self.context = context
        self.factory = factory
        self.stats = stats
        self.handshake_timeout = handshake_timeout
        self.max_handshaking = max_handshaking
        #: Connections before their TLS handshake is done, oldest first.
        self._opening: dict[asyncio.Task[None], None] = {}
        self._accepting: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for sock in self.sockets:
            sock.setblocking(False)
            self._accepting.append(asyncio.create_task(self._accept(sock), name="tq-tls-accept"))

    def close(self) -> None:
        """Stop accepting and drop the connections still in their handshake."""
        for task in [*self._accepting, *self._opening]:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        pending = [*self._accepting, *self._opening]
        if pending:
            await asyncio.wait(pending)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as e:  # out of file descriptors, a connection reset before accept
                log.warning("connection.accept_failed error=%s", e)
                await asyncio.sleep(0.1)  # let descriptors free up instead of spinning
                continue
            if len(self._opening) >= self.max_handshaking:
                oldest = next(iter(self._opening))
                self.stats.drop("evicted")
                oldest.cancel()
                self._opening.pop(oldest, None)
            task = asyncio.create_task(self._open(sock))
            self._opening[task] = None
            task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[None]) -> None:
        self._opening.pop(task, None)

    async def _open(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        peer = _peer(sock)
        handed = False  # the transport owns the socket from here
        try:
            async with asyncio.timeout(self.handshake_timeout) as budget:
                first = await _peek(sock)
                if not first:
                    return  # closed before saying anything
                handed = True
                if first[0] != TLS_HANDSHAKE:
                    self.stats.drop("plaintext")
                    log.debug("connection.plaintext_on_tls peer=%s", peer)
                    await loop.connect_accepted_socket(_Refusal, sock)
                    return
                left = max(0.001, (budget.when() or loop.time()) - loop.time())
                await loop.connect_accepted_socket(
                    self.factory, sock, ssl=self.context, ssl_handshake_timeout=left
                )
        except TimeoutError:
            self.stats.drop("timeout")
            log.debug("connection.tls_handshake_timeout peer=%s", peer)
        except OSError as e:  # ssl.SSLError included: a refused handshake
            self.stats.drop("tls")
            log.info("connection.tls_failed peer=%s error=%s", peer, e)
        except Exception:  # a bug must cost this connection, never the listener
            log.exception("connection.open_crashed peer=%s", peer)
        finally:
            if not handed:
                sock.close()


async def _peek(sock: socket.socket) -> bytes:
    """The first byte the peer sent, left in the socket; b"" if it closed without one."""
    while True:
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(sock)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():  # the reader may fire again before it is removed
            readable.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, ready)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


def _peer(sock: socket.socket) -> str:
    with contextlib.suppress(OSError):
        return str(sock.getpeername())
    return "?"


class _Refusal(asyncio.Protocol):
    """Reads what the plaintext client sent (its HELLO: closing with unread bytes would make
    the kernel reset the connection and lose the NACK), answers the NACK, closes."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        # A client that sent one byte and waits must not keep the socket.
        self.timer = asyncio.get_running_loop().call_later(1.0, self._refuse)

    def data_received(self, data: bytes) -> None:
        self._refuse()

    def _refuse(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        # uvloop's transports implement asyncio.Transport without subclassing it.
        cast(asyncio.Transport, t).write(nack_frame(None, PLAINTEXT_REFUSAL))
        t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
