"""Settings do what they say, against real broker processes: a claim that names no number gets
``broker.default_claim_batch`` (capped by ``max_claim_batch``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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
