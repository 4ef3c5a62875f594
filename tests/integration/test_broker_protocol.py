"""The broker over real sockets: bad input, limits, ordering, backpressure, crash recovery."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rawconn import RawConn, read_nack_then_eof
from tq.core.ids import TaskId
from tq.errors import ErrorCode
from tq.protocol import (
    ClaimTask,
    GetStats,
    Nack,
    Ping,
    QueryStatus,
    SubmitTask,
    TaskResult,
    TaskSpec,
    encode,
)
from tq.protocol.records import TaskOutcome
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path / "data", settings={"broker.max_connections": 8}) as b:
        yield b


async def stays_healthy(port: int) -> None:
    conn = await RawConn.open(port)
    stats = await conn.call(GetStats(request_id=conn.rid()))
    assert stats.stats.node_id
    await conn.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (struct.pack(">I", 5) + b"\x10\xc1\xc1\xc1\xc1", ErrorCode.PROTOCOL_ERROR),  # bad msgpack
        (struct.pack(">I", 1 << 30), ErrorCode.FRAME_TOO_LARGE),  # oversized length prefix
        (struct.pack(">I", 2) + b"\x7f\x80", ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (struct.pack(">I", 0), ErrorCode.PROTOCOL_ERROR),  # empty frame
    ],
    ids=["malformed", "oversized", "unknown-type", "empty"],
)
def test_bad_frames_get_a_nack_and_close_only_that_connection(
    broker: BrokerProcess, frame: bytes, code: ErrorCode
) -> None:
    async def main() -> None:
        bystander = await RawConn.open(broker.port)
        bad = await RawConn.open(broker.port)
        bad.writer.write(frame)
        nack = await read_nack_then_eof(bad.reader)
        assert nack.code == code
        # The other client and the broker carry on.
        reply = await bystander.call(
            SubmitTask(request_id=bystander.rid(), tasks=[TaskSpec(task_type="t")])
        )
        assert len(reply.ids) == 1
        await stays_healthy(broker.port)

    asyncio.run(main())


def test_a_request_before_hello_is_refused_with_handshake_required(broker: BrokerProcess) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(encode(GetStats(request_id=1)))
        nack = await read_nack_then_eof(reader)
        assert nack.code == ErrorCode.HANDSHAKE_REQUIRED
        writer.close()

    asyncio.run(main())


def test_tasks_are_handed_out_by_tier_then_fifo_within_a_priority(broker: BrokerProcess) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        prios = [10, 150, 220, 10, 150, 220, 99, 100, 200, 255, 0]
        specs = [
            TaskSpec(task_type="t", queue="order", priority=p, payload=str(i).encode())
            for i, p in enumerate(prios)
        ]
        for s in specs:  # one submit each, so arrival order is submission order
            await conn.call(SubmitTask(request_id=conn.rid(), tasks=[s]))
        reply = await conn.call(
            ClaimTask(request_id=conn.rid(), worker_id="w", queues=["order"], max_tasks=20)
        )
        got = [int(t.payload) for t in reply.tasks]
        expected = sorted(range(len(prios)), key=lambda i: (-prios[i], i))
        assert got == expected
        await conn.close()

    asyncio.run(main())


def test_submits_above_the_backpressure_threshold_fail_with_queue_full(tmp_path: Path) -> None:
    async def main(port: int) -> None:
        conn = await RawConn.open(port)
        ok = await conn.call(SubmitTask(request_id=conn.rid(), tasks=[TaskSpec(task_type="t")] * 5))
        assert len(ok.ids) == 5
        refused = await conn.call(
            SubmitTask(request_id=conn.rid(), tasks=[TaskSpec(task_type="t")])
        )
        assert isinstance(refused, Nack)
        assert refused.code == ErrorCode.QUEUE_FULL
        claimed = await conn.call(
            ClaimTask(request_id=conn.rid(), worker_id="w", queues=["default"], max_tasks=1)
        )
        assert len(claimed.tasks) == 1  # the queue drains ...
        again = await conn.call(SubmitTask(request_id=conn.rid(), tasks=[TaskSpec(task_type="t")]))
        assert len(again.ids) == 1  # ... and submits are accepted again

    with BrokerProcess(tmp_path / "d", settings={"broker.backpressure_threshold": 5}) as b:
        asyncio.run(main(b.port))


def test_a_long_poll_claim_is_answered_when_a_task_arrives(broker: BrokerProcess) -> None:
    async def main() -> None:
        worker = await RawConn.open(broker.port)
        client = await RawConn.open(broker.port)
        rid = worker.rid()
        worker.writer.write(
            worker.cc.send(
                ClaimTask(request_id=rid, worker_id="w", queues=["lp"], max_tasks=5, wait_ms=20_000)
            )
        )
        # Requests on one connection are handled in order: once the PING is answered, the
        # claim has been handled too, and found nothing to hand out, so it is parked.
        await worker.call(Ping(request_id=worker.rid()))
        assert rid not in worker.replies
        sub = await client.call(
            SubmitTask(request_id=client.rid(), tasks=[TaskSpec(task_type="t", queue="lp")])
        )
        async with asyncio.timeout(5):
            await worker._read_until(lambda: rid in worker.replies)
        assert [t.id for t in worker.replies[rid].tasks] == sub.ids

    asyncio.run(main())


def test_every_acknowledged_submit_survives_a_broker_sigkill_and_completes(tmp_path: Path) -> None:
    acked: list[TaskId] = []

    async def submit_until_killed(b: BrokerProcess) -> None:
        conn = await RawConn.open(b.port)
        try:
            for i in range(100_000):
                spec = TaskSpec(task_type="t", payload=str(i).encode())
                pending = [conn.rid() for _ in range(20)]  # 20 pipelined single submits
                for rid in pending:
                    conn.writer.write(conn.cc.send(SubmitTask(request_id=rid, tasks=[spec])))
                async with asyncio.timeout(10):
                    await conn._read_until(lambda p=pending: all(r in conn.replies for r in p))
                for rid in pending:
                    acked.extend(conn.replies.pop(rid).ids)
                if len(acked) >= 2000:
                    b.kill()  # SIGKILL while more submits are in flight
                    conn.writer.write(conn.cc.send(SubmitTask(request_id=conn.rid(), tasks=[spec])))
                    await conn._read_until(lambda: False)
        except (ConnectionError, OSError):
            return

    async def drain(port: int) -> set[bytes]:
        conn = await RawConn.open(port)
        statuses = []
        for i in range(0, len(acked), 500):
            r = await conn.call(QueryStatus(request_id=conn.rid(), task_ids=acked[i : i + 500]))
            statuses += r.tasks
        missing = [t for t, s in zip(acked, statuses, strict=True) if s is None]
        assert not missing, f"{len(missing)} acknowledged tasks lost"
        done: set[bytes] = set()
        async with asyncio.timeout(60):
            while len(done) < len(acked):
                r = await conn.call(
                    ClaimTask(
                        request_id=conn.rid(),
                        worker_id="w",
                        queues=["default"],
                        max_tasks=500,
                        wait_ms=1000,
                    )
                )
                outs = [
                    TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True) for t in r.tasks
                ]
                if outs:
                    codes = await conn.call(TaskResult(request_id=conn.rid(), results=outs))
                    assert set(codes.codes) == {0}
                    done.update(t.id for t in r.tasks)
        return done

    data = tmp_path / "d"
    b = BrokerProcess(data).start()
    asyncio.run(submit_until_killed(b))
    b.stop()
    with BrokerProcess(data) as again:
        done = asyncio.run(drain(again.port))
    assert set(acked) <= done
    assert len(acked) >= 2000
