"""A client cannot grow the broker through the state it leaves behind (docs/protocol.md,
"Memory per connection"), against a real broker process: pipelined SUBSCRIBEs, huge ones and
pipelined long-poll claims stop at the per-connection caps, which are refused or answered at
once beyond; a refused SUBSCRIBE changes nothing; and thousands of parked claims on one queue
cost nothing to requests on another.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.rawconn import RawConn
from tests.integration.test_broker_memory import rss
from tq.client import AsyncClient
from tq.core.ids import parse_task_id
from tq.errors import ErrorCode
from tq.protocol import (
    Ack,
    CancelTask,
    ClaimReply,
    ClaimTask,
    Nack,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
)
from tq.protocol.registry import Request
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)
log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: docs/protocol.md, "Memory per connection": the output bound (16 + 4 + 16 MiB and the
#: transport's 64 KiB) plus the state the caps allow at the defaults (under 8 MiB).
BOUND = 36 * MiB + 64 * 1024 + 8 * MiB
SETTINGS: dict[str, object] = {
    "monitoring.prometheus_enabled": True,
    "api.rest_enabled": False,
    "api.grpc_enabled": False,
}


def run(scenario: Callable[[], Awaitable[None]], within: float = 150) -> None:
    async def main() -> None:
        async with asyncio.timeout(within):
            await scenario()

    asyncio.run(main())


def baseline(b: BrokerProcess) -> int:
    return max(rss(b) for _ in range(5))


async def flood(
    conn: RawConn, msgs: Sequence[Request], b: BrokerProcess, answered: int | None = None
) -> tuple[list[Any], int]:
    """Pipeline ``msgs`` (10,000 to a write) while reading replies until ``answered`` of
    them (None: all) came; (the replies in order, the broker's peak RSS seen meanwhile)."""
    replies: list[Any] = []
    peak = rss(b)
    want = len(msgs) if answered is None else answered

    async def read() -> None:
        while len(replies) < want:
            data = await conn.reader.read(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            replies.extend(conn.cc.receive_data(data))

    reader = asyncio.create_task(read())
    for start in range(0, len(msgs), 10_000):
        conn.writer.write(b"".join(conn.cc.send(m) for m in msgs[start : start + 10_000]))
        await conn.writer.drain()
        peak = max(peak, rss(b))
    while not reader.done():
        await asyncio.wait({reader}, timeout=0.1)
        peak = max(peak, rss(b))
    reader.result()
    return replies, peak


async def claim_waiters(http: httpx.AsyncClient, b: BrokerProcess) -> float:
    got = await http.get(f"http://{b.host}:{b.ports['metrics_port']}/metrics")
    assert got.status_code == 200, got.text
    for family in text_string_to_metric_families(got.text):
        for s in family.samples:
            if s.name == "tq_claim_waiters":
                return s.value
    raise AssertionError("no tq_claim_waiters in /metrics")


async def until_waiters(http: httpx.AsyncClient, b: BrokerProcess, want: int) -> None:
    async with asyncio.timeout(60):
        while await claim_waiters(http, b) != want:
            await asyncio.sleep(0.05)  # polling a condition under a deadline


def claims(conn: RawConn, queues: list[str], n: int, wait_ms: int = 30_000) -> list[ClaimTask]:
    return [
        ClaimTask(request_id=conn.rid(), worker_id="w", queues=queues, max_tasks=1, wait_ms=wait_ms)
        for _ in range(n)
    ]


def test_pipelined_and_huge_subscribes_leave_no_more_than_the_caps_behind(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", settings=SETTINGS) as b:

        async def scenario() -> None:
            before = baseline(b)
            conn = await RawConn.open(b.port)
            # Before the caps: 400,000 subscriptions kept, +280 MiB (and kept while it pings).
            msgs = [Subscribe(request_id=conn.rid(), queues=[f"q{i}"]) for i in range(400_000)]
            replies, peak = await flood(conn, msgs, b)
            acked = [r for r in replies if isinstance(r, Ack)]
            refused = [r for r in replies if isinstance(r, Nack)]
            assert len(acked) == 1000  # broker.max_watched_queues
            assert len(refused) == len(msgs) - 1000
            assert {r.code for r in refused} == {ErrorCode.INVALID_ARGUMENT}
            assert "broker.max_watched_queues" in refused[0].message
            assert isinstance(await conn.call(Ping(request_id=conn.rid())), Pong)
            # Before: each of these SUBSCRIBEs of 1,000,000 queues kept about +190 MiB.
            for k in range(4):
                names = [f"big{k}-{i}" for i in range(1_000_000)]
                nack = await conn.call(Subscribe(request_id=conn.rid(), queues=names), 60)
                assert isinstance(nack, Nack) and nack.code == ErrorCode.INVALID_ARGUMENT
                peak = max(peak, rss(b))
            kept = max(rss(b) for _ in range(5)) - before
            log.info("peak +%.1f MiB, kept +%.1f MiB", (peak - before) / MiB, kept / MiB)
            assert peak - before < BOUND

        run(scenario)


def test_a_subscribe_past_a_cap_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    caps = {"broker.max_subscriptions": 3, "broker.max_watched_task_ids": 4,
            "broker.max_watched_queues": 2}  # fmt: skip
    with BrokerProcess(tmp_path / "d", settings=SETTINGS | caps) as b:

        async def scenario() -> None:
            q = f"q-{uuid.uuid4().hex[:8]}"
            async with AsyncClient(b.url) as client:
                tasks = [parse_task_id(await client.submit("t", queue=q)) for _ in range(5)]
            conn = await RawConn.open(b.port)

            async def subscribe(**fields: Any) -> tuple[int, Any]:
                rid = conn.rid()
                return rid, await conn.call(Subscribe(request_id=rid, **fields))

            s1, ack1 = await subscribe(task_ids=tasks[:2])
            s2, ack2 = await subscribe(queues=["other", "other"])  # named twice, counted once
            s3, ack3 = await subscribe(all=True)  # counts as a queue: 2 of 2
            assert all(isinstance(a, Ack) for a in (ack1, ack2, ack3))
            refusals = [
                ((await subscribe(task_ids=tasks[2:3]))[1], "broker.max_subscriptions"),
                ((await subscribe(queues=["x"]))[1], "broker.max_subscriptions"),
            ]
            # Replacing s1 by a subscription of all five ids: 5 > 4 ids.
            rid = s1
            replaced = await conn.call(Subscribe(request_id=rid, task_ids=tasks))
            refusals.append((replaced, "broker.max_watched_task_ids"))
            for nack, setting in refusals:
                assert isinstance(nack, Nack), nack
                assert nack.code == ErrorCode.INVALID_ARGUMENT
                assert setting in nack.message
            # s1 still follows what it followed: the refused replacement changed nothing.
            cancel = CancelTask(request_id=conn.rid(), task_ids=[tasks[0], tasks[4]])
            assert (await conn.call(cancel)).codes == [0, 0]
            await conn.wait_event(lambda e: e.subscription_id == s3 and e.task_id == tasks[4])
            mine = [e.task_id for e in conn.events if e.subscription_id == s1]
            assert mine == [tasks[0]]  # not tasks[4]: it was never added
            # Ending one makes room again.
            bye = Unsubscribe(request_id=conn.rid(), subscription_id=s3)
            assert isinstance(await conn.call(bye), Ack)
            _, ack4 = await subscribe(queues=["x"])
            assert isinstance(ack4, Ack)
            # A queue named twice is followed once: one event per change, and none once
            # unsubscribed (it used to stay behind in the queue's index, and keep pushing).
            async with AsyncClient(b.url) as client:
                first = parse_task_id(await client.submit("t", queue="other"))
                await conn.wait_event(lambda e: e.task_id == first)
                assert isinstance(await conn.call(Ping(request_id=conn.rid())), Pong)
                assert [e.subscription_id for e in conn.events if e.task_id == first] == [s2]
                bye = Unsubscribe(request_id=conn.rid(), subscription_id=s2)
                assert isinstance(await conn.call(bye), Ack)
                s5, ack5 = await subscribe(all=True)
                assert isinstance(ack5, Ack)
                second = parse_task_id(await client.submit("t", queue="other"))
                await conn.wait_event(lambda e: e.task_id == second)
                assert isinstance(await conn.call(Ping(request_id=conn.rid())), Pong)
                assert [e.subscription_id for e in conn.events if e.task_id == second] == [s5]

        run(scenario)


def test_long_poll_claims_park_up_to_the_cap_and_the_rest_are_answered_at_once(
    tmp_path: Path,
) -> None:
    with BrokerProcess(tmp_path / "d", settings=SETTINGS | {"broker.max_parked_claims": 5}) as b:

        async def scenario() -> None:
            q = f"q-{uuid.uuid4().hex[:8]}"
            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                conn = await RawConn.open(b.port)
                conn.replies.clear()  # the WELCOME
                msgs = claims(conn, [q], 8)
                t0 = time.monotonic()
                conn.writer.write(b"".join(conn.cc.send(m) for m in msgs))
                async with asyncio.timeout(10):
                    await conn._read_until(lambda: len(conn.replies) == 3)
                assert time.monotonic() - t0 < 5  # not at the 30 s they asked for
                assert sorted(conn.replies) == [m.request_id for m in msgs[5:]]
                assert all(r.tasks == [] for r in conn.replies.values())
                await until_waiters(http, b, 5)
                # A request naming more than 1,000 queues is refused ...
                many = [f"n{i}" for i in range(1001)]
                nack = await conn.call(claims(conn, many, 1)[0])
                assert isinstance(nack, Nack) and nack.code == ErrorCode.INVALID_ARGUMENT
                # ... and one connection's parked claims hold at most 1,000 queue names.
                other = await RawConn.open(b.port)
                (first,) = claims(other, [f"a{i}" for i in range(600)], 1)
                other.writer.write(other.cc.send(first))
                await until_waiters(http, b, 6)
                beyond = await other.call(claims(other, [f"b{i}" for i in range(600)], 1)[0])
                assert isinstance(beyond, ClaimReply) and beyond.tasks == []
                # The parked claims are served as work arrives.
                ids = {await client.submit("t", queue=q) for _ in range(5)}
                async with asyncio.timeout(10):
                    await conn._read_until(lambda: len(conn.replies) == 3 + 5)
                got = {t.id for m in msgs[:5] for t in conn.replies[m.request_id].tasks}
                assert {parse_task_id(i) for i in ids} == got
                await until_waiters(http, b, 1)

        run(scenario)


def test_pipelined_long_poll_claims_leave_no_more_than_the_cap_behind(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "d", settings=SETTINGS) as b:

        async def scenario() -> None:
            before = baseline(b)
            conn = await RawConn.open(b.port)
            # Before the cap: 400,000 parked claims, +490 MiB.
            msgs = [
                ClaimTask(request_id=conn.rid(), worker_id="w", queues=[f"q{i % 100}"],
                          max_tasks=1, wait_ms=30_000)
                for i in range(400_000)
            ]  # fmt: skip
            # All but the 100 parked (broker.max_parked_claims) are answered at once.
            replies, peak = await flood(conn, msgs, b, answered=len(msgs) - 100)
            assert all(isinstance(r, ClaimReply) and r.tasks == [] for r in replies)
            assert isinstance(await conn.call(Ping(request_id=conn.rid())), Pong)
            kept = max(rss(b) for _ in range(5)) - before
            log.info("peak +%.1f MiB, kept +%.1f MiB", (peak - before) / MiB, kept / MiB)
            assert peak - before < BOUND

        run(scenario)


def test_parked_claims_on_one_queue_cost_nothing_to_requests_on_another(tmp_path: Path) -> None:
    settings = SETTINGS | {"broker.max_parked_claims": 1000}
    with BrokerProcess(tmp_path / "d", settings=settings) as b:

        async def scenario() -> None:
            async def submits(n: int) -> list[float]:
                took = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await client.submit("t", queue="other")
                    took.append(time.perf_counter() - t0)
                return took

            async with AsyncClient(b.url) as client, httpx.AsyncClient(timeout=10) as http:
                # A pending task nobody claims: every later batch leaves pending tasks, which
                # used to walk every parked claim (90 ms a submit with 50,000 of them).
                await client.submit("t", queue="other")
                before = statistics.median(await submits(7))
                conns = [await RawConn.open(b.port) for _ in range(50)]
                for conn in conns:
                    msgs = claims(conn, ["empty"], 1000)
                    conn.writer.write(b"".join(conn.cc.send(m) for m in msgs))
                await until_waiters(http, b, 50_000)
                during = statistics.median(await submits(7))
                log.info("submit median %.2f ms, with 50,000 parked claims %.2f ms",
                         before * 1000, during * 1000)  # fmt: skip
                assert during < max(0.02, 10 * before)
                # And they are still served, oldest first, as work arrives on their queue.
                await client.submit("t", queue="empty")
                first = conns[0]
                async with asyncio.timeout(10):
                    await first._read_until(lambda: any(
                        isinstance(r, ClaimReply) and r.tasks for r in first.replies.values()
                    ))  # fmt: skip
                await until_waiters(http, b, 50_000 - 1)
                for conn in conns:
                    await conn.close()

        run(scenario)
