"""The WebSocket slow-consumer policy and the HTTP server's life cycle, on an in-process
broker service (in-memory store) and real sockets: a socket that cannot keep up is closed
with 1013 and a reason, the broker keeps answering meanwhile, and stop() is bounded."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tq.api.http import HttpServer
from tq.broker.service import BrokerService
from tq.config import load
from tq.storage import MemoryBacking, MemoryStore
from tq.storage.recovery import recover

pytestmark = pytest.mark.timeout(60)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 40))


@asynccontextmanager
async def http_server(ws_buffer: int) -> AsyncIterator[tuple[BrokerService, HttpServer, str]]:
    settings = load(env={}, overrides={"api.rest_port": 0})
    store = MemoryStore(MemoryBacking())
    service = BrokerService(settings, store, recover(store, time.time()).machine)
    server = HttpServer(service, settings, ws_buffer=ws_buffer)
    port = await server.start()
    try:
        yield service, server, f"127.0.0.1:{port}"
    finally:
        await server.stop()
        await service.commit.close()
        store.close()


async def subscribe_all(address: str, **options: Any) -> Any:
    ws = await connect(f"ws://{address}/ws", proxy=None, **options)
    await ws.send(json.dumps({"op": "subscribe", "all": True}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


async def closing(ws: Any, timeout: float = 20) -> ConnectionClosed:
    """Read until the server closes the socket; how it closed."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await ws.recv()
            except ConnectionClosed as e:
                return e


def test_a_burst_beyond_the_buffer_closes_the_socket_with_1013() -> None:
    async def scenario() -> None:
        async with http_server(ws_buffer=50) as (service, _, address):
            ws = await subscribe_all(address)
            async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                batch = {"tasks": [{"task_type": "t"}] * 60}  # one durable batch: 60 events
                assert (await http.post("/v1/tasks/batch", json=batch)).status_code == 201
                closed = await closing(ws)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 1013
                assert "slow consumer" in closed.rcvd.reason
                assert len(service.events) == 0  # the hub no longer feeds it
                assert (await http.get("/readyz")).status_code == 200

    run(scenario)


def test_a_socket_that_stops_reading_is_dropped_while_rest_stays_responsive() -> None:
    async def scenario() -> None:
        async with http_server(ws_buffer=200) as (service, _, address):
            host, port = address.split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.connect((host, int(port)))
            sock.setblocking(False)
            ws = await subscribe_all(address, sock=sock, max_queue=1)
            slowest = 0.0
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as http:
                # Long names make big events (~600 bytes): the kernel buffers fill sooner.
                batch = {"tasks": [{"task_type": "t" * 250, "queue": "q" * 250}] * 100}
                for _ in range(2000):  # bounded: kernel buffers fill long before
                    started = time.monotonic()
                    assert (await http.post("/v1/tasks/batch", json=batch)).status_code == 201
                    slowest = max(slowest, time.monotonic() - started)
                    if len(service.events) == 0:
                        break
            assert len(service.events) == 0, "the non-reading socket was never dropped"
            assert slowest < 2.0
            await closing(ws)  # it gets what was sent before, then the end

    run(scenario)


def test_stop_closes_open_sockets_and_returns_promptly() -> None:
    async def scenario() -> None:
        async with http_server(ws_buffer=100) as (service, server, address):
            ws = await subscribe_all(address)
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 5
            closed = await closing(ws)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1012  # service restart
            assert len(service.events) == 0
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as http:
                    await http.get(f"http://{address}/healthz")

    run(scenario)
