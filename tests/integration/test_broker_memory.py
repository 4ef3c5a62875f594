"""A client cannot grow the broker's memory (docs/protocol.md, "Memory per connection"),
against a real broker process: a client that pipelines requests for large replies and never
reads them keeps the broker's RSS within the documented bound while another client is served;
its connection is released when it goes away, closed by the idle sweep when it stays (but not
while it reads slowly and pings: the time the broker does not read it is not its silence),
and a shutdown with its requests still waiting is clean. A subscriber that reads nothing is
closed as a slow consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.rawconn import RawConn, read_nack_then_eof
from tests.integration.test_broker_lockout import scrape, until_metric, value
from tq.client import AsyncClient
from tq.core.ids import parse_task_id
from tq.core.model import TaskState
from tq.errors import ErrorCode
from tq.protocol import (
    ClientConnection,
    FrameDecoder,
    ListTasks,
    Nack,
    Ping,
    QueryStatus,
    StatusReply,
    Subscribe,
    TaskEvent,
    TaskOutcome,
)
from tq.protocol.registry import Request
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)
log = logging.getLogger(__name__)

MiB = 1024 * 1024
FRAME = 16 * MiB  # broker.max_frame_size_bytes, default
HIGH = 4 * MiB  # broker.output_high_water_bytes, default
#: The documented bound of one connection: an incoming frame, the output mark, one reply
#: beyond it and the transport's 64 KiB.
BOUND = FRAME + HIGH + FRAME + 64 * 1024
SETTINGS: dict[str, object] = {
    "monitoring.prometheus_enabled": True,
    "api.rest_enabled": False,
    "api.websocket_enabled": False,
    "api.grpc_enabled": False,
}


def rss(b: BrokerProcess) -> int:
    assert b.proc is not None
    return int(psutil.Process(b.proc.pid).memory_info().rss)


async def open_unread(port: int) -> tuple[ClientConnection, asyncio.StreamWriter]:
    """A handshaken connection with a tiny receive window, whose replies nobody reads."""
    conn = await RawConn.open(port, rcvbuf=4096)
    return conn.cc, conn.writer


def pipeline(cc: ClientConnection, writer: asyncio.StreamWriter, msgs: list[Request]) -> None:
    writer.write(b"".join(cc.send(m) for m in msgs))


async def big_tasks(client: AsyncClient, queue: str) -> str:
    """One task with a 10 MiB payload (its id), and six completed with 3 MiB results."""
    big = await client.submit("big", b"p" * (10 * MiB), queue=f"{queue}-big")
    worker = f"w-{queue}"
    for i in range(6):
        await client.submit("res", queue=queue)
        (task,) = await client.claim(worker, [queue], 1)
        outcome = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True,
                              result=bytes([i]) * (3 * MiB))  # fmt: skip
        assert await client.report([outcome]) == [0]
    return big


def hostile(cc: ClientConnection, big: str) -> list[Request]:
    """60 QUERY_STATUS of the 10 MiB payload and 40 LIST_TASKS of the 3 MiB results."""
    tid = parse_task_id(big)
    out: list[Request] = [
        QueryStatus(request_id=cc.next_request_id(), task_ids=[tid], include_payload=True)
        for _ in range(60)
    ]
    out += [
        ListTasks(request_id=cc.next_request_id(), state=TaskState.COMPLETED, limit=100)
        for _ in range(40)
    ]
    return out


async def round_trip(client: AsyncClient, queue: str) -> float:
    """Submit, claim, complete and wait for the result; how long it took."""
    started = time.monotonic()
    task_id = await client.submit("rt", b"x", queue=queue)
    (task,) = await client.claim(f"rt-{queue}", [queue], 1, wait=5)
    ok = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True, result=b"done")
    assert await client.report([ok]) == [0]
    assert await client.result(task_id, timeout=10) == b"done"
    return time.monotonic() - started


def run(b: BrokerProcess, scenario: Callable[[], Awaitable[None]], within: float = 150) -> None:
    async def main() -> None:
        async with asyncio.timeout(within):
            await scenario()

    asyncio.run(main())


def test_unread_pipelined_replies_keep_the_broker_within_its_bound_while_others_are_served(
    tmp_path: Path,
) -> None:
    with BrokerProcess(tmp_path / "d", settings=SETTINGS) as b:

        async def scenario() -> None:
            queue = f"q-{uuid.uuid4().hex[:8]}"
            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                big = await big_tasks(client, queue)
                await round_trip(client, f"{queue}-rt")  # warm: the paths the check uses
                baseline = max([rss(b) for _ in range(5)])
                cc, writer = await open_unread(b.port)
                pipeline(cc, writer, hostile(cc, big))
                peak, trips = baseline, []
                deadline = time.monotonic() + 4  # before the fix: +1 GB within 2 s
                while time.monotonic() < deadline:
                    trips.append(await round_trip(client, f"{queue}-rt"))
                    peak = max(peak, rss(b))
                grown = peak - baseline
                log.info(
                    "baseline %.0f MiB, grown %.1f MiB, %d round trips, slowest %.3f s",
                    baseline / MiB, grown / MiB, len(trips), max(trips),
                )  # fmt: skip
                assert grown < BOUND, f"grew {grown / MiB:.0f} MiB for one unread connection"
                assert len(trips) >= 3
                assert max(trips) < 3.0
                assert value(await scrape(http, b), "tq_connections") == 2
                # The reader goes away: its connection and output are released.
                writer.transport.abort()
                await until_metric(http, b, "tq_connections", 1, 15)
                await round_trip(client, f"{queue}-rt")

        run(b, scenario)


def test_the_idle_sweep_closes_a_connection_whose_requests_wait(tmp_path: Path) -> None:
    settings = SETTINGS | {"broker.idle_timeout_s": 2.0, "broker.maintenance_interval_s": 0.5}
    with BrokerProcess(tmp_path / "d", settings=settings) as b:

        async def scenario() -> None:
            async with AsyncClient(b.url) as client:
                big = await client.submit("big", b"p" * (10 * MiB))
            cc, writer = await open_unread(b.port)
            pipeline(cc, writer, hostile(cc, big)[:30])
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    await until_metric(http, b, "tq_connections", 1, 10)  # stuck, open
                    await until_metric(http, b, "tq_connections", 0, 20)  # then swept
            finally:
                writer.transport.abort()

        run(b, scenario)


def test_a_slow_reader_that_pings_is_not_closed_as_idle_while_its_requests_wait(
    tmp_path: Path,
) -> None:
    # 40 replies of 1 MiB read at about 4 MiB/s: 10 s, five idle timeouts, during which the
    # broker reads nothing (its output is over the 64 KiB mark) and the PINGs wait unread.
    settings = SETTINGS | {"broker.idle_timeout_s": 2.0, "broker.maintenance_interval_s": 0.5,
                           "broker.output_high_water_bytes": 65536}  # fmt: skip
    with BrokerProcess(tmp_path / "d", settings=settings) as b:

        async def scenario() -> None:
            async with AsyncClient(b.url) as client:
                tid = parse_task_id(await client.submit("big", b"p" * MiB))
            conn = await RawConn.open(b.port, rcvbuf=65536)
            asks: list[Request] = [
                QueryStatus(request_id=conn.rid(), task_ids=[tid], include_payload=True)
                for _ in range(40)
            ]
            pipeline(conn.cc, conn.writer, asks)
            got, pinged, t0 = 0, time.monotonic(), time.monotonic()
            while got < len(asks):
                data = await conn.reader.read(65536)
                assert data, f"closed after {got} replies, {time.monotonic() - t0:.1f} s"
                for msg in conn.cc.receive_data(data):
                    assert not isinstance(msg, Nack), msg
                    got += isinstance(msg, StatusReply)
                if time.monotonic() - pinged > 0.5:  # all a client can do to keep alive
                    conn.writer.write(conn.cc.send(Ping(request_id=conn.rid())))
                    pinged = time.monotonic()
                await asyncio.sleep(0.015)
            assert time.monotonic() - t0 > 2 * 2.0  # the reads did span idle timeouts
            # The idle clock still runs once the client falls silent.
            nack = await read_nack_then_eof(conn.reader, timeout=10)
            assert (nack.request_id, nack.code) == (0, ErrorCode.TIMEOUT)

        run(b, scenario)


def test_a_shutdown_with_requests_still_waiting_is_clean_and_prompt(tmp_path: Path) -> None:
    b = BrokerProcess(tmp_path / "d", settings=SETTINGS).start()
    try:

        async def scenario() -> None:
            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                big = await client.submit("big", b"p" * (10 * MiB))
                cc, writer = await open_unread(b.port)
                pipeline(cc, writer, hostile(cc, big))
                await until_metric(http, b, "tq_connections", 2, 10)
                started = time.monotonic()
                assert await asyncio.to_thread(b.stop, 30) == 0
                assert time.monotonic() - started < 15
                writer.transport.abort()

        run(b, scenario)
    finally:
        b.kill()


def test_a_subscriber_that_reads_nothing_is_closed_as_a_slow_consumer(tmp_path: Path) -> None:
    # A small mark and frame: the slow-consumer limit is 64 KiB + 2 x 1 MiB.
    settings = SETTINGS | {
        "broker.output_high_water_bytes": 65536,
        "broker.max_frame_size_bytes": MiB,
        "broker.max_payload_size_bytes": MiB // 2,
    }
    with BrokerProcess(tmp_path / "d", settings=settings) as b:

        async def scenario() -> None:
            queue = f"q-{uuid.uuid4().hex[:8]}"
            sub = await RawConn.open(b.port, rcvbuf=4096)
            ack = await sub.call(Subscribe(request_id=sub.rid(), queues=[queue]))
            assert not isinstance(ack, Nack)
            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                # Events carry results of 400 KiB; 40 of them are far past the limit.
                for i in range(40):
                    await client.submit("t", queue=queue)
                    (task,) = await client.claim("w", [queue], 1)
                    out = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True,
                                      result=bytes([i]) * (400 * 1024))  # fmt: skip
                    assert await client.report([out]) == [0]
                    if value(await scrape(http, b), "tq_connections") == 1:
                        break
                await until_metric(http, b, "tq_connections", 1, 10)  # only the producer
            frames = await read_to_end(sub.reader)
            nack = frames[-1]
            assert isinstance(nack, Nack)
            assert (nack.request_id, nack.code) == (0, ErrorCode.QUEUE_FULL)
            assert "slow consumer" in nack.message
            assert any(isinstance(f, TaskEvent) for f in frames)

        run(b, scenario)


async def read_to_end(reader: asyncio.StreamReader) -> list[Any]:
    """Every frame until the broker closes (or resets) the connection."""
    dec = FrameDecoder()
    frames: list[Any] = []
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(ConnectionResetError):
                data = await reader.read(1 << 20)
                if data:
                    frames += dec.feed(data)
                    continue
            return frames
