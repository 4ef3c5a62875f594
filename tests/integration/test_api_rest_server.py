"""The HTTP server as the broker starts it, in process on real sockets: CORS for the origins
configured, /ws only when WebSocket is enabled, and a bind failure reported as an error that
names the address (never uvicorn's ``sys.exit``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tq.api.http import HttpServer
from tq.broker.service import BrokerService
from tq.config import load
from tq.errors import ErrorCode, TqError
from tq.storage import MemoryBacking, MemoryStore
from tq.storage.recovery import recover

pytestmark = pytest.mark.timeout(60)
DASHBOARD = "https://dash.example"


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


@asynccontextmanager
async def http_server(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = load(env={}, overrides={"api.rest_port": 0, **overrides})
    store = MemoryStore(MemoryBacking())
    service = BrokerService(settings, store, recover(store, time.time()).machine)
    server = HttpServer(service, settings)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        await server.stop()
        await service.commit.close()
        store.close()


def test_configured_origins_get_cors_headers_and_others_do_not() -> None:
    async def scenario() -> None:
        async with http_server(**{"api.cors_origins": [DASHBOARD]}) as http:
            preflight = await http.options(
                "/v1/tasks",
                headers={"origin": DASHBOARD, "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == DASHBOARD
            r = await http.get("/v1/stats", headers={"origin": DASHBOARD})
            assert r.headers["access-control-allow-origin"] == DASHBOARD
            missing = await http.get("/v1/nothing", headers={"origin": DASHBOARD})
            assert missing.status_code == 404  # errors carry the header too
            assert missing.headers["access-control-allow-origin"] == DASHBOARD
            other = await http.get("/v1/stats", headers={"origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers

    run(scenario)


def test_without_cors_origins_no_cors_headers_are_sent() -> None:
    async def scenario() -> None:
        async with http_server() as http:
            r = await http.get("/v1/stats", headers={"origin": DASHBOARD})
            assert r.status_code == 200
            assert "access-control-allow-origin" not in r.headers

    run(scenario)


def test_websocket_disabled_means_no_ws_route() -> None:
    async def scenario() -> None:
        async with http_server(**{"api.websocket_enabled": False}) as http:
            r = await http.get("/ws")
            assert r.status_code == 404
            assert r.json()["error"]["name"] == "ROUTE_NOT_FOUND"
            assert (await http.get("/healthz")).status_code == 200

    run(scenario)


def test_a_port_in_use_is_an_error_naming_the_address() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            settings = load(env={}, overrides={"api.rest_port": port})
            store = MemoryStore(MemoryBacking())
            service = BrokerService(settings, store, recover(store, time.time()).machine)
            with pytest.raises(TqError) as e:
                await HttpServer(service, settings).start()
            assert e.value.code is ErrorCode.CONFIG_ERROR
            assert f"127.0.0.1:{port}" in e.value.message
            await service.commit.close()
            store.close()

    run(scenario)


def test_an_unexpected_exception_is_a_logged_500_internal_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        settings = load(env={}, overrides={"api.rest_port": 0})
        store = MemoryStore(MemoryBacking())
        service = BrokerService(settings, store, recover(store, time.time()).machine)
        server = HttpServer(service, settings)

        @server.app.get("/v1/boom")
        async def boom() -> None:
            raise RuntimeError("a bug with a secret in it")

        port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                r = await http.get("/v1/boom")
                assert r.status_code == 500
                assert r.json() == {
                    "error": {
                        "code": 9000, "name": "INTERNAL", "message": "internal error: RuntimeError",
                    }
                }  # fmt: skip
                assert (await http.get("/healthz")).status_code == 200
        finally:
            await server.stop()
            await service.commit.close()
            store.close()

    run(scenario)
    crashes = [r for r in caplog.records if r.getMessage().startswith("http.crashed")]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None
