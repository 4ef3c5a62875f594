"""No lockout: connection slots, the handshake deadline and the idle timeout of a real broker
process, against sockets that trickle partial frames (docs/protocol.md, "Connection lifecycle").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.rawconn import RawConn, read_nack_then_eof
from tq.broker.limits import RESERVED_FDS
from tq.client import AsyncClient
from tq.errors import ErrorCode
from tq.protocol import Ack, GetStats, Hello, MessageType, Ping, Subscribe, encode
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)
log = logging.getLogger(__name__)

TRICKLERS = 1000
#: The start of a HELLO frame that never ends: N = 60000 (within the HELLO limit) announced,
#: then one more payload byte now and then. Before the fix each byte reset the idle timer.
PARTIAL_HELLO = struct.pack(">IB", 60_000, MessageType.HELLO)
#: The same for an established connection: a PING frame announced, never finished.
PARTIAL_PING = struct.pack(">IB", 1_000, MessageType.PING)
#: Metrics on (to watch the slots), the other management doors off.
METRICS = {
    "monitoring.prometheus_enabled": True,
    "api.rest_enabled": False,
    "api.grpc_enabled": False,
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def need_descriptors(n: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``n``, or skip if the hard limit forbids."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} open files but the hard RLIMIT_NOFILE is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


async def scrape(http: httpx.AsyncClient, b: BrokerProcess) -> Samples:
    got = await http.get(f"http://{b.host}:{b.ports['metrics_port']}/metrics")
    assert got.status_code == 200, got.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(got.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted({"door": "tcp", **labels}.items())))]


async def until_metric(
    http: httpx.AsyncClient, b: BrokerProcess, name: str, want: float, within: float
) -> Samples:
    """Scrape until ``name{door="tcp"}`` equals ``want``; the last scrape."""
    async with asyncio.timeout(within):
        while value(found := await scrape(http, b), name) != want:
            await asyncio.sleep(0.05)  # polling a condition under a deadline
    return found


async def trickle(writers: list[asyncio.StreamWriter], every: float, stop: asyncio.Event) -> None:
    """One more byte to every socket still open, every ``every`` seconds, until ``stop``."""
    while not stop.is_set():
        for w in writers:
            if not w.is_closing():
                w.write(b"x")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()
    for w in writers:
        with contextlib.suppress(ConnectionError, OSError):
            await w.wait_closed()


@pytest.fixture
def own_descriptors() -> Iterator[None]:
    """Room for the test's own sockets; the soft limit is restored afterwards."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    need_descriptors(TRICKLERS + 512)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_a_good_client_connects_and_submits_while_1000_sockets_trickle_partial_hellos(
    tmp_path: Path, own_descriptors: None
) -> None:
    async def main(b: BrokerProcess) -> None:
        writers: list[asyncio.StreamWriter] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                for _ in range(TRICKLERS // 100):
                    opened = await asyncio.gather(
                        *(asyncio.open_connection(b.host, b.port) for _ in range(100))
                    )
                    for _, w in opened:
                        w.write(PARTIAL_HELLO)
                        writers.append(w)
                trickling = asyncio.create_task(trickle(writers, 0.5, stop))
                # Every trickler is accepted and in its handshake: those slots are all taken.
                found = await until_metric(http, b, "tq_connections_handshaking", TRICKLERS, 60)
                assert value(found, "tq_connections") == 0  # ... and no established one

                t0 = time.monotonic()
                async with asyncio.timeout(10), AsyncClient(b.url, reconnect=False) as client:
                    task_id = await client.submit("t", b"while the tricklers trickle")
                    assert (await client.status(task_id)).state == "pending"
                    established = await scrape(http, b)
                elapsed = time.monotonic() - t0

                # The newcomer closed the oldest trickler to get in; it then held an
                # established slot, which the tricklers never did.
                assert value(established, "tq_connections") == 1
                assert value(established, "tq_connections_handshaking") == TRICKLERS - 1
                reasons = {
                    reason: value(established, "tq_connections_dropped_in_handshake_total",
                                  reason=reason)
                    for reason in ("evicted", "timeout")
                }  # fmt: skip
                assert reasons == {"evicted": 1, "timeout": 0}
                assert elapsed < 10
                log.info("good client connected and submitted in %.0f ms", elapsed * 1000)
            finally:
                stop.set()
                if writers:
                    await trickling
                await close_all(writers)

    settings = {**METRICS, "broker.handshake_timeout_s": 300}  # eviction, not the deadline
    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        asyncio.run(main(b))


def test_a_socket_that_never_completes_hello_is_closed_at_the_handshake_deadline(
    tmp_path: Path,
) -> None:
    async def main(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(PARTIAL_HELLO)
        stop = asyncio.Event()
        trickling = asyncio.create_task(trickle([writer], 0.1, stop))
        # A client that completes HELLO at once outlives the deadline.
        good = await RawConn.open(port)
        try:
            nack = await read_nack_then_eof(reader, timeout=10)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            await trickling
            writer.close()
        assert nack.code == ErrorCode.TIMEOUT
        assert nack.request_id == 0
        assert "handshake_timeout_s" in nack.message
        assert 0.9 <= elapsed < 2.5, elapsed
        assert await good.call(Ping(request_id=good.rid()))
        await good.close()

    with BrokerProcess(tmp_path / "d", settings={"broker.handshake_timeout_s": 1}) as b:
        asyncio.run(main(b.port))


def test_only_complete_frames_keep_a_connection_open_past_the_idle_timeout(
    tmp_path: Path,
) -> None:
    async def main(port: int) -> None:
        t0 = time.monotonic()  # before the trickler's HELLO, its last complete frame
        trickler = await RawConn.open(port)
        trickler.writer.write(PARTIAL_PING)
        subscribed = await RawConn.open(port)  # waits for events and says nothing more
        sub = await subscribed.call(Subscribe(request_id=subscribed.rid(), all=True))
        assert isinstance(sub, Ack)
        pinger = await RawConn.open(port)
        stop = asyncio.Event()

        async def ping() -> None:
            while not stop.is_set():
                await pinger.call(Ping(request_id=pinger.rid()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await stop.wait()

        tasks = [
            asyncio.create_task(trickle([trickler.writer], 0.1, stop)),
            asyncio.create_task(ping()),
        ]
        try:
            closed = await asyncio.gather(
                read_nack_then_eof(trickler.reader, timeout=10),
                read_nack_then_eof(subscribed.reader, timeout=10),
            )
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        for nack in closed:
            assert nack.code == ErrorCode.TIMEOUT
            assert nack.request_id == 0
            assert "idle" in nack.message
        # idle_timeout_s, plus up to one maintenance interval, plus a noisy machine's slack
        assert 1.0 <= elapsed < 3.5, elapsed
        stats = await pinger.call(GetStats(request_id=pinger.rid()))
        assert stats.stats.node_id  # the pinging connection is still open
        await pinger.close()

    settings = {"broker.idle_timeout_s": 1, "broker.maintenance_interval_s": 0.2}
    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        asyncio.run(main(b.port))


def test_connections_count_against_max_connections_only_once_their_hello_is_complete(
    tmp_path: Path,
) -> None:
    async def main(b: BrokerProcess) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            established = [await RawConn.open(b.port) for _ in range(3)]
            # Accepted while every slot is taken, and not refused: it has not said HELLO.
            early = await RawConn.open(b.port, hello=False)
            await until_metric(http, b, "tq_connections_handshaking", 1, 10)
            await established.pop().close()
            await until_metric(http, b, "tq_connections", 2, 10)
            early.writer.write(early.cc.hello())
            async with asyncio.timeout(10):
                await early._read_until(lambda: early.cc.welcome is not None)
            established.append(early)

            # A HELLO completed while all three slots are established is refused.
            reader, writer = await asyncio.open_connection(b.host, b.port)
            writer.write(encode(Hello(request_id=7, versions=[1])))
            nack = await read_nack_then_eof(reader)
            writer.close()
            assert nack.code == ErrorCode.TOO_MANY_CONNECTIONS
            assert nack.request_id == 7  # it answers the HELLO
            assert "broker.max_connections" in nack.message
            found = await scrape(http, b)
            assert value(found, "tq_connections_refused_total") == 1
            assert value(found, "tq_connections") == 3
            for conn in established:  # still served
                assert await conn.call(Ping(request_id=conn.rid()))
                await conn.close()

    with BrokerProcess(tmp_path / "d", settings={**METRICS, "broker.max_connections": 3}) as b:
        asyncio.run(main(b))


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/<pid>/limits")
def test_the_broker_raises_its_soft_open_files_limit_to_fit_its_slots(tmp_path: Path) -> None:
    settings = {"broker.max_connections": 500, "broker.max_handshaking": 300}
    needed = 500 + 300 + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard RLIMIT_NOFILE {hard} is below the {needed} this test raises to")
    low = len(os.listdir("/proc/self/fd")) + 64  # enough to spawn the broker
    if low >= needed:
        pytest.skip(f"this process already holds {low - 64} descriptors")
    # The broker inherits a low soft limit from its parent, as under a default `ulimit -n`.
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        b = BrokerProcess(tmp_path / "d", settings=settings).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert b.proc is not None
        limits = Path(f"/proc/{b.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert int(line.split()[3]) == needed, line
        assert f"broker.nofile raised soft={low} to={needed}" in b.log_tail(200)
    finally:
        b.stop()
