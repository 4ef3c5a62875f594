"""A fake cluster follower for client tests: a real TCP server speaking the real frame protocol
(``tq.protocol.ServerConnection``), on its own thread and event loop so that sync clients and
child processes can reach it too.

It does what a follower does at its door and nothing more: it answers HELLO, PING, SUBSCRIBE
and UNSUBSCRIBE (a follower serves reads: its subscriptions simply push nothing here; or,
with ``serves_subscriptions=False``, refuses them too), and refuses every other request NACK
NOT_LEADER naming ``leader`` (None: no leader known, as during an election); the first
``deposed`` of those it answers TIMEOUT instead, as a deposed leader may. It applies
nothing, so a test that ends with the work done on a real broker shows the client moved
there. ``seen`` counts the type of each request it refused.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from types import TracebackType
from typing import Self

from tq.errors import ErrorCode, NotLeaderError, UnavailableError
from tq.protocol import (
    Ack,
    FrameError,
    Hello,
    Ping,
    Pong,
    ServerConnection,
    Subscribe,
    Unsubscribe,
)

#: How long start() and stop() wait for the follower's thread.
_THREAD_TIMEOUT = 10.0


class FakeFollower:
    """``with FakeFollower(leader="127.0.0.1:7420") as f: Client(f.url)``."""

    def __init__(
        self, leader: str | None, *, serves_subscriptions: bool = True, deposed: int = 0
    ) -> None:
        #: Where refusals point (read on each refusal: a test may change it meanwhile).
        self.leader = leader
        #: Writes answered TIMEOUT first, as a leader deposed while they waited for their log
        #: append answers them (the outcome unknown), before it refuses NOT_LEADER.
        self.deposed = deposed
        #: False: SUBSCRIBE is refused NOT_LEADER too (a cluster that sends watchers on).
        self.serves_subscriptions = serves_subscriptions
        self.seen: Counter[str] = Counter()
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-follower")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"tq://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(_THREAD_TIMEOUT)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = ServerConnection(
            server_name="fake-follower",
            node_id="follower",
            heartbeat_interval=15.0,
            lease_duration=30.0,
        )
        try:
            while data := await reader.read(65536):
                try:
                    requests = conn.receive_data(data)
                except FrameError as e:
                    writer.write(conn.nack(e))
                    break
                for request in requests:
                    writer.write(self._answer(conn, request))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, conn: ServerConnection, request: object) -> bytes:
        if isinstance(request, Hello):
            return conn.welcome()
        if isinstance(request, Ping):
            return conn.send(Pong(request_id=request.request_id))
        if isinstance(request, Subscribe | Unsubscribe) and self.serves_subscriptions:
            return conn.send(Ack(request_id=request.request_id))
        rid = getattr(request, "request_id", None)
        self.seen[type(request).__name__] += 1
        if self.deposed > 0:
            self.deposed -= 1
            unknown = UnavailableError(
                "the log append was not confirmed: the change may or may not be applied",
                ErrorCode.TIMEOUT,
            )
            return conn.nack(unknown, rid)
        refusal = NotLeaderError("not applied: this node is a follower", leader=self.leader)
        return conn.nack(refusal, rid)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(_THREAD_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_THREAD_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
