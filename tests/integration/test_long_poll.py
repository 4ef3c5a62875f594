"""WELCOME's idle timeout and long-poll cap (``idle_timeout``, ``max_wait_ms``): the broker
applies what it advertises, the client keeps a long-polling connection alive with PINGs at
half the idle timeout, and a worker against a broker that never holds a claim claims about
once per ``CLAIM_WAIT``, not in a tight loop. A parked claim held back while its connection's
output was over the mark is served once that output drains, not at its deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tq.worker.examples
from tests.integration.rawconn import RawConn, read_nack_then_eof
from tq.client import AsyncClient
from tq.errors import ErrorCode
from tq.protocol import ClaimReply, ClaimTask, Ping, SubmitTask, TaskSpec
from tq.testing import BrokerProcess
from tq.worker import Worker
from tq.worker.worker import CLAIM_WAIT

pytestmark = pytest.mark.timeout(120)

SETTINGS = {
    "broker.max_long_poll_s": 0,  # every claim is answered at once
    "monitoring.prometheus_enabled": True,
    "api.rest_enabled": False,
    "api.grpc_enabled": False,
}


async def claims(http: httpx.AsyncClient, b: BrokerProcess) -> float:
    """How many claims the broker has answered (its claim latency histogram's count)."""
    got = await http.get(f"http://{b.host}:{b.ports['metrics_port']}/metrics")
    assert got.status_code == 200, got.text
    for family in text_string_to_metric_families(got.text):
        for s in family.samples:
            if s.name == "tq_claim_latency_seconds_count":
                return s.value
    raise AssertionError("no tq_claim_latency_seconds_count in /metrics")


def test_a_worker_against_a_broker_without_long_polls_does_not_spin(tmp_path: Path) -> None:
    async def main(b: BrokerProcess) -> None:
        q = f"lp-{uuid.uuid4().hex[:8]}"
        worker = Worker(tq.worker.examples, url=b.url, queues=[q], concurrency=1)
        running = asyncio.create_task(worker.run())
        try:
            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                task_id = await client.submit("echo", b"hi", queue=q)
                assert await client.result(task_id, timeout=30) == b"hi"  # it claims and runs
                before, t0 = await claims(http, b), time.monotonic()
                async with asyncio.timeout(30):
                    while await claims(http, b) < before + 3:
                        await asyncio.sleep(0.1)  # polling a condition under a deadline
                elapsed = time.monotonic() - t0
                # Three empty claims, each followed by the rest of CLAIM_WAIT: at least two
                # full waits between the first and the third (a spinning worker: milliseconds).
                assert elapsed >= 2 * CLAIM_WAIT * 0.9, elapsed
        finally:
            worker.request_stop()
            async with asyncio.timeout(30):
                await running

    with BrokerProcess(tmp_path / "d", settings=SETTINGS) as b:
        asyncio.run(main(b))


def run(main: Any) -> None:
    asyncio.run(main())


def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def test_welcome_advertises_the_idle_timeout_and_the_long_poll_cap_the_broker_applies(
    tmp_path: Any,
) -> None:
    settings = {"broker.idle_timeout_s": 2.0, "broker.max_long_poll_s": 1.0,
                "broker.maintenance_interval_s": 0.2}  # fmt: skip

    async def main(port: int) -> None:
        conn = await RawConn.open(port)
        welcome = conn.cc.welcome
        assert welcome is not None
        assert (welcome.idle_timeout, welcome.max_wait_ms) == (2.0, 1000)
        t0 = time.monotonic()
        claim = ClaimTask(request_id=conn.rid(), worker_id="w", queues=[queue()], wait_ms=60_000)
        reply = await conn.call(claim, timeout=10)
        assert reply.tasks == []  # answered empty at the cap, long before the 60 s asked
        assert 0.9 <= time.monotonic() - t0 < 5.0
        # Then the silent connection (no PING, no complete frame) closes at the idle timeout.
        nack = await read_nack_then_eof(conn.reader, timeout=10)
        assert nack.code == ErrorCode.TIMEOUT and nack.request_id == 0
        assert 2.0 <= time.monotonic() - t0 < 6.0

        client = AsyncClient(f"tq://127.0.0.1:{port}", reconnect=False)
        try:
            t0 = time.monotonic()
            # The client asks no more than the advertised cap, whatever its caller asked.
            assert await client.claim("w", [queue()], wait=60.0) == []
            assert 0.9 <= time.monotonic() - t0 < 5.0
        finally:
            await client.close()

    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        run(lambda: main(b.port))


def test_a_client_long_polling_past_the_idle_timeout_keeps_its_connection(tmp_path: Any) -> None:
    settings = {"broker.idle_timeout_s": 1.0, "broker.max_long_poll_s": 4.0,
                "broker.maintenance_interval_s": 0.2}  # fmt: skip

    async def main(port: int) -> None:
        client = AsyncClient(f"tq://127.0.0.1:{port}", reconnect=False)
        try:
            t0 = time.monotonic()
            # A connection lost meanwhile would fail this call: claims are never re-sent.
            assert await client.claim("w", [queue()], wait=3.0) == []
            assert time.monotonic() - t0 >= 2.9
            assert await client.ping() >= 0  # the same connection (reconnect=False) still serves
        finally:
            await client.close()

    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        run(lambda: main(b.port))


def test_parked_claims_held_back_by_their_connection_s_output_are_served_once_it_drains(
    tmp_path: Any,
) -> None:
    # A 64 KiB mark: the first claim's reply (a 200 KiB task) takes the connection over it.
    # No background batch for a while (maintenance, lease checks): before the fix, only a
    # later batch leaving pending tasks retried the held claim.
    settings = {
        "broker.output_high_water_bytes": 65536, "broker.maintenance_interval_s": 60,
        "broker.lease_check_interval_s": 25, "monitoring.prometheus_enabled": False,
        "api.rest_enabled": False, "api.grpc_enabled": False,
    }  # fmt: skip

    async def main(port: int) -> None:
        q = queue()
        worker = await RawConn.open(port)
        parked = [
            ClaimTask(request_id=worker.rid(), worker_id="w", queues=[q], max_tasks=1,
                      wait_ms=20_000)
            for _ in range(2)
        ]  # fmt: skip
        worker.writer.write(b"".join(worker.cc.send(m) for m in parked))
        await worker.call(Ping(request_id=worker.rid()))  # answered in order: both are parked
        producer = await RawConn.open(port)
        specs = [TaskSpec(task_type="t", queue=q, payload=bytes([i]) * 200_000) for i in (1, 2)]
        t0 = time.monotonic()
        await producer.call(SubmitTask(request_id=producer.rid(), tasks=specs))  # one batch
        async with asyncio.timeout(10):  # before the fix: the second came empty at 20 s
            await worker._read_until(lambda: all(m.request_id in worker.replies for m in parked))
        replies = [worker.replies[m.request_id] for m in parked]
        assert all(isinstance(r, ClaimReply) and len(r.tasks) == 1 for r in replies)
        assert {r.tasks[0].payload[0] for r in replies} == {1, 2}
        assert time.monotonic() - t0 < 3

    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        run(lambda: main(b.port))
