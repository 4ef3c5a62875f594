"""Settings do what they say, against real broker processes: a claim that names no number gets
``broker.default_claim_batch`` (capped by ``max_claim_batch``), and the HTTP server runs for
WebSocket alone (health included, REST routes not) and not at all when both are off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tq.client import AsyncClient
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(90)

NO_FRONTS = {"api.grpc_enabled": False, "monitoring.prometheus_enabled": False}


def test_a_claim_without_a_number_gets_the_default_batch_and_any_claim_the_cap_at_most(
    tmp_path: Path,
) -> None:
    settings = {
        **NO_FRONTS,
        "api.rest_enabled": False,
        "api.websocket_enabled": False,
        "broker.default_claim_batch": 3,
        "broker.max_claim_batch": 4,
    }

    async def scenario(url: str) -> None:
        async with AsyncClient(url) as client:
            for i in range(10):
                await client.submit("count", str(i).encode(), queue="batch")
            assert len(await client.claim("w", ["batch"])) == 3
            assert len(await client.claim("w", ["batch"], max_tasks=50)) == 4
            assert len(await client.claim("w", ["batch"], max_tasks=2)) == 2
            assert len(await client.claim("w", ["batch"])) == 1  # all that is left

    with BrokerProcess(tmp_path / "data", settings=settings) as broker:
        asyncio.run(asyncio.wait_for(scenario(broker.url), 30))


def test_websocket_without_rest_runs_the_http_server_with_health_but_no_rest_routes(
    tmp_path: Path,
) -> None:
    settings = {**NO_FRONTS, "api.rest_enabled": False, "api.websocket_enabled": True}

    async def scenario(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/v1/stats")).status_code == 404
        async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=10) as ws:
            await ws.send(json.dumps({"op": "subscribe", "all": True}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["type"] == "subscribed"

    with BrokerProcess(tmp_path / "data", settings=settings) as broker:
        asyncio.run(asyncio.wait_for(scenario(broker.ports["rest_port"]), 30))


def test_no_rest_and_no_websocket_means_no_http_server(tmp_path: Path) -> None:
    settings = {**NO_FRONTS, "api.rest_enabled": False, "api.websocket_enabled": False}
    with BrokerProcess(tmp_path / "data", settings=settings) as broker:
        assert set(broker.ports) == {"port"}
