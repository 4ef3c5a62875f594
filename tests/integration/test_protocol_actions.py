"""ACT_ON_TASKS and ACT_ON_FILTER on a real broker, in raw frames as docs/protocol.md states
them: per-task results worded by the broker, paging by cursor that ends even when the action
leaves tasks matching, and a clear NACK (the connection going on) for every malformed request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from tests.integration.test_protocol_errors import Wire, frame
from tq.core.ids import TaskId
from tq.core.model import TaskState
from tq.errors import ErrorCode
from tq.protocol import (
    MIN_CLIENT_FRAME_SIZE,
    ActOnFilter,
    ActOnTasks,
    ActReply,
    CancelReply,
    CancelTask,
    Hello,
    MessageType,
    Nack,
    Ping,
    Pong,
    QueryStatus,
    StatusReply,
    SubmitReply,
    SubmitTask,
    TaskSpec,
    Welcome,
    encode,
)
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
FAR = 3600.0  #: a delay that keeps a task scheduled for the whole test


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("acts") / "d") as b:
        yield b


def run(main: Any) -> None:
    asyncio.run(main())


class Rids:
    def __init__(self) -> None:
        self.last = 100

    def __call__(self) -> int:
        self.last += 1
        return self.last


async def ask(wire: Wire, msg: Any) -> Any:
    wire.writer.write(encode(msg))
    return await wire.reply(msg.request_id)


async def submit(wire: Wire, rid: Rids, specs: list[TaskSpec]) -> list[TaskId]:
    reply = await ask(wire, SubmitTask(request_id=rid(), tasks=specs))
    assert isinstance(reply, SubmitReply), reply
    return [TaskId(i) for i in reply.ids]


async def dead_lettered(wire: Wire, rid: Rids, queue: str, n: int) -> list[TaskId]:
    """``n`` tasks in dead letter without a worker: each depends on a cancelled task."""
    deps = await submit(wire, rid, [TaskSpec(task_type="dep", queue=queue, delay=FAR)] * n)
    dead = await submit(
        wire, rid, [TaskSpec(task_type="t", queue=queue, depends_on=(d,)) for d in deps]
    )
    assert isinstance(await ask(wire, CancelTask(request_id=rid(), task_ids=deps)), CancelReply)
    return dead


async def states(wire: Wire, rid: Rids, ids: list[TaskId]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(ids), 100):  # 100 records fit the smallest frame limit
        reply = await ask(wire, QueryStatus(request_id=rid(), task_ids=ids[start : start + 100]))
        assert isinstance(reply, StatusReply), reply
        out += [None if t is None else t.state for t in reply.tasks]
    return out


def test_act_on_tasks_answers_each_task_in_the_brokers_words(broker: BrokerProcess) -> None:
    async def main() -> None:
        wire, rid, queue = await Wire.open(broker.port), Rids(), f"q-{uuid.uuid4().hex[:8]}"
        (dead,) = await dead_lettered(wire, rid, queue, 1)
        (live,) = await submit(wire, rid, [TaskSpec(task_type="t", queue=queue, delay=FAR)])
        unknown = TaskId(uuid.uuid4().bytes)
        msg = ActOnTasks(request_id=rid(), action="retry", task_ids=[dead, live, unknown, dead])
        reply = await ask(wire, msg)
        assert isinstance(reply, ActReply), reply
        assert [r.task_id for r in reply.results] == [dead, live, unknown]  # duplicate once
        assert [r.code for r in reply.results] == [
            0, ErrorCode.INVALID_STATE, ErrorCode.TASK_NOT_FOUND,
        ]  # fmt: skip
        assert reply.results[0].message == ""
        assert "only dead_letter tasks can be retried, and it is scheduled" in (
            reply.results[1].message
        )
        assert str(uuid.UUID(bytes=unknown)) in reply.results[2].message
        assert reply.next_cursor is None
        assert await states(wire, rid, [dead, live]) == ["pending", "scheduled"]
        # delete refuses a live task (cancel it first) and removes a finished one.
        cancel = await ask(wire, ActOnTasks(request_id=rid(), action="cancel", task_ids=[live]))
        assert [r.code for r in cancel.results] == [0]
        gone = await ask(wire, ActOnTasks(request_id=rid(), action="delete", task_ids=[live, dead]))
        assert [r.code for r in gone.results] == [0, ErrorCode.INVALID_STATE]
        assert "cancel it first" in gone.results[1].message
        assert await states(wire, rid, [live, dead]) == [None, "pending"]
        await wire.close()

    run(main)


def test_act_on_filter_pages_by_cursor_and_ends_though_nothing_changes(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire, rid, queue = await Wire.open(broker.port), Rids(), f"q-{uuid.uuid4().hex[:8]}"
        live = await submit(wire, rid, [TaskSpec(task_type="t", queue=queue, delay=FAR)] * 5)
        seen: list[TaskId] = []
        cursor: bytes | None = None
        for _ in range(10):  # bounded: three pages are expected
            msg = ActOnFilter(request_id=rid(), action="retry", queue=queue, limit=2, cursor=cursor)
            reply = await ask(wire, msg)
            assert isinstance(reply, ActReply), reply
            assert all(r.code == ErrorCode.INVALID_STATE for r in reply.results)
            seen += [r.task_id for r in reply.results]
            cursor = reply.next_cursor
            if cursor is None:
                break
        assert seen == live  # each once, in id order, and the paging ended
        assert await states(wire, rid, live) == ["scheduled"] * 5
        await wire.close()

    run(main)


def test_act_on_filter_without_a_cursor_goes_on_when_the_action_empties_the_selection(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire, rid, queue = await Wire.open(broker.port), Rids(), f"q-{uuid.uuid4().hex[:8]}"
        dead = await dead_lettered(wire, rid, queue, 3)

        def spec() -> ActOnFilter:
            return ActOnFilter(
                request_id=rid(), action="retry", queue=queue, state=TaskState.DEAD_LETTER,
                limit=2,
            )  # fmt: skip

        first = await ask(wire, spec())
        assert [r.task_id for r in first.results] == dead[:2]
        assert first.next_cursor is not None
        rest = await ask(wire, spec())
        assert [r.task_id for r in rest.results] == dead[2:]
        assert rest.next_cursor is None
        assert await states(wire, rid, dead) == ["pending"] * 3
        await wire.close()

    run(main)


ACT = MessageType.ACT_ON_TASKS
BY_FILTER = MessageType.ACT_ON_FILTER
ID = uuid.uuid4().bytes
MALFORMED: dict[str, tuple[int, dict[str, Any], int, str]] = {
    "unknown action": (ACT, {"action": "explode", "task_ids": [ID]}, 2000, "$.action"),
    "no action": (ACT, {"task_ids": [ID]}, 2000, "action"),
    "id of 15 bytes": (ACT, {"action": "retry", "task_ids": [ID[:15]]}, 2000, "$.task_ids[0]"),
    "ids as text": (ACT, {"action": "retry", "task_ids": [str(uuid.UUID(bytes=ID))]}, 2000,
                    "$.task_ids[0]"),
    "10,001 ids": (ACT, {"action": "delete", "task_ids": [ID] * 10_001}, 2000, "$.task_ids"),
    "limit 0": (BY_FILTER, {"action": "retry", "queue": "q", "limit": 0}, 2000, "$.limit"),
    "limit 10,001": (BY_FILTER, {"action": "retry", "queue": "q", "limit": 10_001}, 2000,
                     "$.limit"),
    "unknown state": (BY_FILTER, {"action": "retry", "state": "zombie"}, 2000, "$.state"),
    "empty queue name": (BY_FILTER, {"action": "delete", "queue": ""}, 2000, "$.queue"),
    "a cursor of 65 bytes": (BY_FILTER, {"action": "retry", "queue": "q", "cursor": b"x" * 65},
                             2000, "cursor is not a next_cursor value"),
    "a filter of every task": (BY_FILTER, {"action": "delete"}, 2000,
                               "the filter selects every task"),
    "priority_min 300": (BY_FILTER, {"action": "cancel", "priority_min": 300}, 2000,
                         "$.priority_min"),
}  # fmt: skip


def test_a_malformed_action_is_a_clear_nack_and_the_connection_goes_on(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        # Pipelined: each bad request gets its own NACK naming what was wrong.
        for rid, (code, body, _, _) in enumerate(MALFORMED.values(), start=10):
            wire.writer.write(frame(code, {"request_id": rid, **body}))
        for rid, (name, (_, _, error, words)) in enumerate(MALFORMED.items(), start=10):
            nack = await wire.reply(rid)
            assert isinstance(nack, Nack), (name, nack)
            assert nack.code == error, (name, nack)
            assert words in nack.message, (name, nack.message)
        wire.writer.write(encode(Ping(request_id=99)))
        assert isinstance(await wire.reply(99), Pong)
        await wire.close()

    run(main)


def test_an_action_whose_reply_could_exceed_the_clients_frame_limit_does_nothing(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        wire = Wire(reader, writer)
        hello = Hello(request_id=1, versions=[1], max_frame_size=MIN_CLIENT_FRAME_SIZE)
        writer.write(encode(hello))
        assert isinstance(await wire.reply(1), Welcome)
        rid, queue = Rids(), f"q-{uuid.uuid4().hex[:8]}"
        ids = await submit(wire, rid, [TaskSpec(task_type="t", queue=queue, delay=FAR)] * 300)
        nack = await ask(wire, ActOnTasks(request_id=rid(), action="cancel", task_ids=ids))
        assert isinstance(nack, Nack) and nack.code == ErrorCode.REPLY_TOO_LARGE, nack
        assert "at most 252 per request" in nack.message
        assert set(await states(wire, rid, ids)) == {"scheduled"}  # nothing was cancelled
        too_many = ActOnFilter(request_id=rid(), action="cancel", queue=queue, limit=300)
        nack = await ask(wire, too_many)
        assert isinstance(nack, Nack) and nack.code == ErrorCode.REPLY_TOO_LARGE, nack
        fits = ActOnFilter(request_id=rid(), action="cancel", queue=queue, limit=252)
        reply = await ask(wire, fits)
        assert isinstance(reply, ActReply) and len(reply.results) == 252
        assert len(msgspec.msgpack.encode(reply)) < MIN_CLIENT_FRAME_SIZE
        await wire.close()

    run(main)
