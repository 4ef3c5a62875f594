"""A bare protocol connection for broker tests: real socket, sans-I/O client state, no client
library, so tests can also send bytes no well-behaved client would."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, TypeVar

from tq.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    ClientConnection,
    FrameDecoder,
    Nack,
    TaskEvent,
    WorkerOrders,
)
from tq.protocol.registry import Request

T = TypeVar("T")


class RawConn:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        api_key: str | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.cc = ClientConnection(
            client_name="test", max_frame_size=max_frame_size, api_key=api_key
        )
        self.events: list[TaskEvent] = []
        self.orders: list[WorkerOrders] = []
        self.replies: dict[int, Any] = {}  # Any: tests know which reply a request gets

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        hello: bool = True,
        rcvbuf: int | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        api_key: str | None = None,
    ) -> RawConn:
        """``api_key``: what HELLO presents. ``rcvbuf``: a small receive buffer (set before
        connecting, so the window the broker sees is small from the start), for tests of a
        client that reads slowly.
        ``max_frame_size``: the limit HELLO states (and the decoder enforces)."""
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        conn = cls(reader, writer, max_frame_size, api_key)
        if hello:
            writer.write(conn.cc.hello())
            await conn._read_until(lambda: conn.cc.welcome is not None)
        return conn

    def rid(self) -> int:
        return self.cc.next_request_id()

    async def call(self, msg: Request, timeout: float = 10.0) -> Any:
        rid = msg.request_id
        self.writer.write(self.cc.send(msg))
        async with asyncio.timeout(timeout):
            await self._read_until(lambda: rid in self.replies)
        return self.replies.pop(rid)

    async def wait_event(self, pred: Any, timeout: float = 10.0) -> TaskEvent:
        async with asyncio.timeout(timeout):
            await self._read_until(lambda: any(pred(e) for e in self.events))
        return next(e for e in self.events if pred(e))

    async def more_events(self, seen: int, timeout: float = 10.0) -> None:
        """Read until more than ``seen`` events have arrived."""
        async with asyncio.timeout(timeout):
            await self._read_until(lambda: len(self.events) > seen)

    async def _read_until(self, cond: Any) -> None:
        while not cond():
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("broker closed the connection")
            for msg in self.cc.receive_data(data):
                if isinstance(msg, TaskEvent):
                    self.events.append(msg)
                elif isinstance(msg, WorkerOrders):
                    self.orders.append(msg)
                else:
                    self.replies[msg.request_id] = msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def read_nack_then_eof(reader: asyncio.StreamReader, timeout: float = 10.0) -> Nack:
    """Read raw frames until the broker closes; the NACK it sent before closing."""
    dec = FrameDecoder()
    nacks: list[Nack] = []
    async with asyncio.timeout(timeout):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            nacks += [m for m in dec.feed(data) if isinstance(m, Nack)]
    assert nacks, "the broker closed without a NACK"
    return nacks[-1]
