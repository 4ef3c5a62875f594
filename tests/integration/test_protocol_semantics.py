"""What docs/protocol.md promises about messages, checked on a real broker: subscriptions to
unknown ids and ``until_terminal``, results and progress for cancelled tasks, stale releases
and GET_STATS totals.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.rawconn import RawConn
from tests.unit.test_protocol_docs import documented_totals
from tq.core.ids import TaskId
from tq.errors import ErrorCode
from tq.protocol import (
    Ack,
    CancelTask,
    ClaimTask,
    GetStats,
    Heartbeat,
    Nack,
    Ping,
    Progress,
    QueryStatus,
    ReleaseTasks,
    SubmitTask,
    Subscribe,
    TaskLease,
    TaskOutcome,
    TaskResult,
    TaskSpec,
)
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
UNKNOWN = TaskId(uuid.UUID("00000000-0000-7000-8000-00000000abcd").bytes)
#: Short leases, so a test can watch one expire.
SETTINGS = {
    "broker.lease_duration_s": 2,
    "broker.lease_check_interval_s": 0.2,
    "broker.heartbeat_interval_s": 0.5,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("semantics") / "d", settings=SETTINGS) as b:
        yield b


def run(main: Any) -> None:
    asyncio.run(main())


def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


async def submit(conn: RawConn, q: str) -> TaskId:
    reply = await conn.call(
        SubmitTask(request_id=conn.rid(), tasks=[TaskSpec(task_type="t", queue=q)])
    )
    (task_id,) = reply.ids
    return TaskId(task_id)


async def claim(conn: RawConn, q: str, worker: str = "w") -> tuple[TaskId, int]:
    reply = await conn.call(
        ClaimTask(request_id=conn.rid(), worker_id=worker, queues=[q], max_tasks=1, wait_ms=5000)
    )
    (task,) = reply.tasks
    return TaskId(task.id), task.lease_token


WATCHES = {
    "ids": {},
    "ids until terminal": {"until_terminal": True},
    "ids and a queue": {"queues": ["somewhere"]},
    "ids and all": {"all": True},
    "all until terminal": {"all": True, "until_terminal": True},
}


@pytest.mark.parametrize("watch", WATCHES.values(), ids=WATCHES.keys())
def test_subscribing_to_an_unknown_task_id_is_task_not_found_and_subscribes_nothing(
    broker: BrokerProcess, watch: dict[str, Any]
) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        q = queue()
        known = await submit(conn, q)
        rid = conn.rid()
        fields = {**watch, "queues": [*watch.get("queues", []), q]}
        nack = await conn.call(Subscribe(request_id=rid, task_ids=[known, UNKNOWN], **fields))
        assert isinstance(nack, Nack) and nack.code == ErrorCode.TASK_NOT_FOUND
        assert str(uuid.UUID(bytes=UNKNOWN)) in nack.message
        # Nothing was subscribed: a task of that queue moving on pushes nothing. Its event
        # would have been pushed before the claim's answer on this same connection.
        await submit(conn, q)
        await claim(conn, q)
        await conn.call(Ping(request_id=conn.rid()))
        assert conn.events == []
        await conn.close()

    run(main)


def test_until_terminal_pushes_only_the_terminal_event_of_each_task_id(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        q = queue()
        task_id = await submit(conn, q)
        by_id = conn.rid()
        assert isinstance(
            await conn.call(Subscribe(request_id=by_id, task_ids=[task_id], until_terminal=True)),
            Ack,
        )
        # With a queue too, events that match the queue are pushed as without until_terminal.
        by_queue = conn.rid()
        watch = Subscribe(request_id=by_queue, task_ids=[task_id], queues=[q], until_terminal=True)
        assert isinstance(await conn.call(watch), Ack)
        claimed, token = await claim(conn, q)
        assert claimed == task_id
        progress = Progress(request_id=conn.rid(), task_id=task_id, lease_token=token, percent=50)
        assert isinstance(await conn.call(progress), Ack)
        outcome = TaskOutcome(task_id=task_id, lease_token=token, ok=True, result=b"r")
        done = await conn.call(TaskResult(request_id=conn.rid(), results=[outcome]))
        assert done.codes == [0]
        # The completed event is pushed when its batch is durable, before the result's reply.
        one_shot = [(e.state, e.progress) for e in conn.events if e.subscription_id == by_id]
        assert one_shot == [("completed", None)]
        states = [(e.state, e.progress) for e in conn.events if e.subscription_id == by_queue]
        assert states == [("in_progress", None), ("in_progress", 50), ("completed", None)]
        await conn.close()

    run(main)


def test_a_result_or_progress_for_a_task_cancelled_while_it_ran_is_invalid_state(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        q = queue()
        await submit(conn, q)
        task_id, token = await claim(conn, q)
        cancelled = await conn.call(CancelTask(request_id=conn.rid(), task_ids=[task_id]))
        assert cancelled.codes == [0]
        outcomes = [
            TaskOutcome(task_id=task_id, lease_token=token, ok=True),
            TaskOutcome(task_id=task_id, lease_token=token, ok=False, error="boom"),
            TaskOutcome(task_id=UNKNOWN, lease_token=token, ok=True),
        ]
        reply = await conn.call(TaskResult(request_id=conn.rid(), results=outcomes))
        assert reply.codes == [ErrorCode.INVALID_STATE, ErrorCode.INVALID_STATE,
                               ErrorCode.TASK_NOT_FOUND]  # fmt: skip
        progress = Progress(request_id=conn.rid(), task_id=task_id, lease_token=token, percent=9)
        nack = await conn.call(progress)
        assert isinstance(nack, Nack) and nack.code == ErrorCode.INVALID_STATE
        assert "cancelled" in nack.message
        await conn.close()

    run(main)


async def state_of(conn: RawConn, task_id: TaskId) -> tuple[str, int]:
    (info,) = (await conn.call(QueryStatus(request_id=conn.rid(), task_ids=[task_id]))).tasks
    return info.state, info.attempts


def test_a_stale_release_is_ignored_and_cannot_free_a_later_claim(broker: BrokerProcess) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        q, worker = queue(), f"w-{uuid.uuid4().hex[:6]}"
        task_id = await submit(conn, q)
        _, stale = await claim(conn, q, worker)
        async with asyncio.timeout(15):  # no heartbeat: the lease expires, the task returns
            while (await state_of(conn, task_id))[0] != "pending":
                await asyncio.sleep(0.05)  # polling a condition under a deadline
        again, current = await claim(conn, q, worker)  # the same worker, a later attempt
        assert again == task_id and current != stale
        beat = Heartbeat(request_id=conn.rid(), worker_id=worker, running=[task_id])
        await conn.call(beat)  # the later lease runs for a full lease_duration from here

        def release(token: int) -> ReleaseTasks:
            lease = TaskLease(task_id=task_id, lease_token=token)
            return ReleaseTasks(request_id=conn.rid(), worker_id=worker, leases=[lease])

        ack = await conn.call(release(stale))
        assert isinstance(ack, Ack)  # ignored, not refused: the reply is ACK all the same
        assert await state_of(conn, task_id) == ("in_progress", 2)
        ack = await conn.call(release(current))
        assert isinstance(ack, Ack)
        assert await state_of(conn, task_id) == ("pending", 1)  # the released claim did not count
        await conn.close()

    run(main)


def test_get_stats_totals_are_exactly_the_documented_keys(broker: BrokerProcess) -> None:
    async def main() -> None:
        conn = await RawConn.open(broker.port)
        stats = (await conn.call(GetStats(request_id=conn.rid()))).stats
        assert sorted(stats.totals) == sorted(documented_totals())
        await conn.close()

    run(main)
