"""The client outlives its broker: after a restart, calls and waits carry on by themselves.

The broker is stopped (SIGTERM) and started again on the same port and data dir; tasks are
durable, so everything submitted before is still there afterwards.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tq.client import AsyncClient, ConnectionLostError, TaskOutcome
from tq.errors import ErrorCode, UnavailableError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(90)


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, bounded by a deadline."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return run


async def restarted(broker: BrokerProcess) -> None:
    """Stop the broker and start it again on its port (blocking calls, off the loop)."""
    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)


@aio
async def test_calls_after_a_broker_restart_reconnect_by_themselves(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        async with AsyncClient(broker.url) as client:
            task_id = await client.submit("t", b"durable")
            await restarted(broker)
            info = await client.status(task_id, include_payload=True)
            assert (info.state, info.payload) == ("pending", b"durable")
            assert await client.submit("t") != task_id


@aio
async def test_a_call_made_while_the_broker_is_down_waits_for_it_to_return(
    tmp_path: Path,
) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        async with AsyncClient(broker.url) as client:
            task_id = await client.submit("t")
            await asyncio.to_thread(broker.stop)
            again = BrokerProcess(tmp_path / "data", port=broker.port)
            # The call starts against a dead port and backs off until the broker is back.
            status = asyncio.ensure_future(client.status(task_id))
            await asyncio.to_thread(again.start)
            assert (await status).state == "pending"
            await asyncio.to_thread(again.stop)
    finally:
        broker.stop()


@aio
async def test_a_wait_survives_a_restart_and_gets_the_result(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        async with AsyncClient(broker.url) as client:
            task_id = await client.submit("t", queue="q")
            waiting = asyncio.ensure_future(client.result(task_id, timeout=45))
            await asyncio.sleep(0)  # the wait sends its SUBSCRIBE ...
            await client.ping()  # ... before this PING: when it returns the wait is held
            await restarted(broker)
            async with AsyncClient(broker.url) as worker:
                (claimed,) = await worker.claim("w", ["q"], max_tasks=1, wait=5.0)
                outcome = TaskOutcome(
                    task_id=claimed.id, lease_token=claimed.lease_token, ok=True, result=b"r"
                )
                assert await worker.report([outcome]) == [0]
            assert await waiting == b"r"


@aio
async def test_without_reconnect_a_lost_connection_stays_lost(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        async with AsyncClient(broker.url, reconnect=False) as client:
            await client.ping()
            await restarted(broker)
            with pytest.raises(ConnectionLostError):
                await client.ping()


@aio
async def test_an_unreachable_broker_fails_within_the_request_timeout(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        url = broker.url
    async with AsyncClient(url, request_timeout=1.0, connect_timeout=0.5) as client:
        with pytest.raises(UnavailableError, match=r"no connection to .* within 1 s") as info:
            await client.ping()
        assert info.value.code is ErrorCode.TIMEOUT
        assert "(last error: cannot connect to" in info.value.message
