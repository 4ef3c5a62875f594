"""The connection shell against a scripted broker on 127.0.0.1 (real sockets, real frames).

The scripted broker speaks the protocol through ``ServerConnection`` and answers each request
with whatever the test's ``answer`` function returns, so each test shows one rule of
``tq.client.connection``: pipelining, coalesced writes, NACK mapping, loss, timeouts, events.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tq.client.address import parse_url
from tq.client.connection import Connection, ConnectionLostError
from tq.core.ids import make_task_id
from tq.errors import AuthError, ConflictError, ErrorCode, UnavailableError, ValidationError
from tq.protocol import (
    Ack,
    Hello,
    InvalidMessage,
    Nack,
    Ping,
    Pong,
    Reply,
    Request,
    ServerConnection,
    SubmitTask,
    Subscribe,
    TaskEvent,
    nack_frame,
)

pytestmark = pytest.mark.timeout(30)


def aio(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop, bounded by a deadline."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 20))

    return run


Answer = Callable[[Request], list[Reply | TaskEvent] | None]
TID = make_task_id(1_700_000_000_000, 7)


class ScriptedBroker:
    def __init__(self, answer: Answer, *, refuse: ErrorCode | None = None) -> None:
        self.answer = answer
        self.refuse = refuse
        self.reads = 0
        self.requests: list[Request] = []
        self.writers: list[asyncio.StreamWriter] = []
        self._arrived = asyncio.Event()

    async def received(self, n: int) -> None:
        """Return once ``n`` requests have arrived (the test's deadline bounds the wait)."""
        while len(self.requests) < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        conn = ServerConnection(
            server_name="scripted", node_id="n1", heartbeat_interval=1.0, lease_duration=5.0
        )
        while data := await reader.read(1 << 16):
            self.reads += 1
            for msg in conn.receive_data(data):
                assert not isinstance(msg, InvalidMessage), msg  # the client validates first
                if isinstance(msg, Hello):
                    if self.refuse is not None:
                        writer.write(nack_frame(msg.request_id, AuthError("no", self.refuse)))
                        writer.close()
                        return
                    writer.write(conn.welcome())
                    continue
                self.requests.append(msg)
                self._arrived.set()
                for out in self.answer(msg) or []:
                    writer.write(conn.send(out))
        writer.close()

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


@asynccontextmanager
async def scripted(answer: Answer, **kw: ErrorCode) -> AsyncIterator[tuple[ScriptedBroker, str]]:
    broker = ScriptedBroker(answer, **kw)
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield broker, f"tq://127.0.0.1:{port}"
    finally:
        broker.drop_connections()
        server.close()
        await server.wait_closed()


def pong(req: Request) -> list[Reply | TaskEvent] | None:
    return [Pong(request_id=req.request_id)]


async def connect(url: str) -> Connection:
    return await Connection.open(parse_url(url), timeout=5.0, client_name="test")


@aio
async def test_the_handshake_exposes_the_brokers_limits() -> None:
    async with scripted(pong) as (_, url):
        conn = await connect(url)
        assert conn.is_open
        assert conn.welcome is not None
        assert conn.welcome.server_name == "scripted"
        assert conn.max_frame_size == 16 * 1024 * 1024
        conn.close()


@aio
async def test_a_refused_handshake_raises_the_brokers_error() -> None:
    async with scripted(pong, refuse=ErrorCode.UNAUTHENTICATED) as (_, url):
        with pytest.raises(AuthError) as info:
            await connect(url)
        assert info.value.code is ErrorCode.UNAUTHENTICATED


@aio
async def test_nobody_listening_is_unavailable() -> None:
    async with scripted(pong) as (_, url):
        pass  # the server is closed now: its port refuses connections
    with pytest.raises(UnavailableError, match="cannot connect"):
        await connect(url)


@aio
async def test_replies_are_matched_by_request_id_whatever_their_order() -> None:
    held: list[Request] = []

    def answer_in_reverse(req: Request) -> list[Reply | TaskEvent] | None:
        held.append(req)
        if len(held) < 3:
            return None
        return [Pong(request_id=r.request_id) for r in reversed(held)]

    async with scripted(answer_in_reverse) as (_broker, url):
        conn = await connect(url)
        sent: list[int] = []

        def ping(rid: int) -> Ping:
            sent.append(rid)
            return Ping(request_id=rid)

        replies = await asyncio.gather(*(conn.request(ping, Pong, 5.0) for _ in range(3)))
        assert [r.request_id for r in replies] == sent
        conn.close()


@aio
async def test_requests_made_in_one_loop_turn_go_out_in_one_write() -> None:
    async with scripted(pong) as (broker, url):
        conn = await connect(url)
        reads_before = broker.reads
        await asyncio.gather(
            *(conn.request(lambda rid: Ping(request_id=rid), Pong, 5.0) for _ in range(500))
        )
        # 500 unbatched frames would need hundreds of reads; one write arrives in a few.
        assert broker.reads - reads_before <= 5
        conn.close()


@aio
async def test_a_nack_is_raised_as_the_typed_error_of_its_code() -> None:
    def refuse(req: Request) -> list[Reply | TaskEvent]:
        return [Nack(request_id=req.request_id, code=3004, message="tasks[0]: no dependency x")]

    async with scripted(refuse) as (_, url):
        conn = await connect(url)
        with pytest.raises(ConflictError) as info:
            await conn.request(lambda rid: Ping(request_id=rid), Pong, 5.0)
        assert info.value.code is ErrorCode.DEPENDENCY_NOT_FOUND
        assert info.value.message == "tasks[0]: no dependency x"
        assert conn.is_open  # a request error leaves the connection usable
        conn.close()


@aio
async def test_a_bad_value_is_refused_locally_and_the_connection_survives() -> None:
    async with scripted(pong) as (broker, url):
        conn = await connect(url)
        from tq.client import task_spec

        bad = task_spec("t", priority=300)
        with pytest.raises(ValidationError, match=r"tasks\[0\]\.priority"):
            await conn.request(lambda rid: SubmitTask(request_id=rid, tasks=[bad]), Ack, 5.0)
        assert not broker.requests
        await conn.request(lambda rid: Ping(request_id=rid), Pong, 5.0)
        conn.close()


@aio
async def test_a_request_without_reply_times_out_and_the_connection_stays() -> None:
    def silent_then_pong(req: Request) -> list[Reply | TaskEvent] | None:
        return None if len(broker.requests) == 1 else pong(req)

    async with scripted(silent_then_pong) as (broker, url):
        conn = await connect(url)
        with pytest.raises(UnavailableError) as info:
            await conn.request(lambda rid: Ping(request_id=rid), Pong, 0.2)
        assert info.value.code is ErrorCode.TIMEOUT
        await conn.request(lambda rid: Ping(request_id=rid), Pong, 5.0)
        conn.close()


@aio
async def test_losing_the_connection_fails_every_pending_request_and_tells_the_owner() -> None:
    async with scripted(lambda req: None) as (broker, url):
        lost = asyncio.Event()
        conn = await Connection.open(
            parse_url(url), timeout=5.0, on_lost=lambda c, reason: lost.set()
        )
        pending = [
            asyncio.ensure_future(conn.request(lambda rid: Ping(request_id=rid), Pong, 10.0))
            for _ in range(3)
        ]
        await broker.received(3)
        broker.drop_connections()
        async with asyncio.timeout(5):
            await lost.wait()
        for fut in pending:
            with pytest.raises(ConnectionLostError):
                await fut
        assert not conn.is_open
        with pytest.raises(ConnectionLostError):
            await conn.request(lambda rid: Ping(request_id=rid), Pong, 1.0)


@aio
async def test_events_reach_the_callback_of_their_subscription() -> None:
    def ack_then_event(req: Request) -> list[Reply | TaskEvent] | None:
        if isinstance(req, Subscribe):
            event = TaskEvent(
                subscription_id=req.request_id, task_id=TID, state="completed", at=1.0
            )
            # An event for a subscription nobody holds is dropped, not an error.
            stray = TaskEvent(subscription_id=999, task_id=TID, state="completed", at=1.0)
            return [Ack(request_id=req.request_id), event, stray]
        return pong(req)

    async with scripted(ack_then_event) as (_, url):
        conn = await connect(url)
        events: list[TaskEvent] = []
        sid = await conn.subscribe(
            lambda rid: Subscribe(request_id=rid, task_ids=[TID], until_terminal=True),
            events.append,
            5.0,
        )
        await conn.request(lambda rid: Ping(request_id=rid), Pong, 5.0)  # events precede PONG
        assert [(e.subscription_id, e.state) for e in events] == [(sid, "completed")]
        conn.unsubscribe(sid)
        conn.close()


@aio
async def test_an_idle_connection_sends_keepalive_pings() -> None:
    async with scripted(pong) as (broker, url):
        conn = await Connection.open(parse_url(url), timeout=5.0, keepalive=0.05)
        await broker.received(2)
        assert all(isinstance(r, Ping) for r in broker.requests)
        assert conn.is_open
        conn.close()
