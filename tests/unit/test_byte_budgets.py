"""Byte budgets of the state machine and the service: a claim stops before the task that would
pass its budget (and leaves it in place, the same on replay), listings page by size, a status
lookup beyond its budget is refused whole, and tags are limited in count and bytes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tq.broker.access import Principal
from tq.broker.convert import MAX_TAGS, TAG_VALUE_MAX_LEN, new_task
from tq.broker.requests import PAGE_BYTES, ListQuery, TaskFilter
from tq.broker.service import BrokerService
from tq.config import load
from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.machine import Machine
from tq.core.model import TaskState
from tq.core.replies import ClaimedTask, ClaimReply, SubmitReply
from tq.core.sizes import claimed_size
from tq.errors import ErrorCode, ValidationError
from tq.protocol.records import TaskOutcome, TaskSpec
from tq.storage import MemoryBacking, MemoryStore
from tq.storage.recovery import recover

ANYONE = Principal.ANYONE

W = WorkerId("w")
KiB = 1024
_ids = itertools.count(1)


def new(payload: bytes = b"", **kw: Any) -> c.NewTask:
    return c.NewTask(make_task_id(1_700_000_000_000, next(_ids)), "t", "q", payload, 128, 3, **kw)


def claim(m: Machine, n: int, max_bytes: int, fx: Effects | None = None) -> list[ClaimedTask]:
    cmd = c.ClaimTasks(1.0, W, ("q",), n, 30.0, max_bytes)
    reply = m.apply(cmd, fx or Effects())
    assert isinstance(reply, ClaimReply)
    return reply.tasks


def submitted(*tasks: c.NewTask) -> Machine:
    m = Machine()
    reply = m.apply(c.SubmitTasks(0.0, tasks, 1000), Effects())
    assert isinstance(reply, SubmitReply)
    return m


# -- claims ------------------------------------------------------------------------------------


def test_a_claim_stops_before_the_task_that_would_pass_its_byte_budget() -> None:
    tasks = [new(b"x" * (10 * KiB)) for _ in range(5)]
    m = submitted(*tasks)
    one = claimed_size(m.get(tasks[0].id))  # type: ignore[arg-type]
    got = claim(m, 5, 3 * one - 1)
    assert [t.id for t in got] == [t.id for t in tasks[:2]]
    # The task that did not fit kept its place: it is the next one handed out.
    assert [t.id for t in claim(m, 5, 0)] == [t.id for t in tasks[2:]]


def test_a_task_larger_than_the_whole_budget_stays_pending_for_a_claim_with_room() -> None:
    big, small = new(b"x" * (100 * KiB)), new(b"y")
    m = submitted(big, small)
    assert claim(m, 10, 50 * KiB) == []  # never skipped by the smaller one behind it
    assert m.get(big.id).state is TaskState.PENDING  # type: ignore[union-attr]
    assert m.count(TaskState.PENDING) == 2
    assert [t.id for t in claim(m, 10, 200 * KiB)] == [big.id, small.id]


def test_without_a_byte_budget_a_claim_takes_up_to_max_tasks() -> None:
    tasks = [new(b"x" * (100 * KiB)) for _ in range(3)]
    m = submitted(*tasks)
    assert len(claim(m, 3, 0)) == 3


def test_replaying_claims_with_budgets_gives_the_same_state() -> None:
    tasks = tuple(new(b"x" * (i * KiB)) for i in range(1, 30))
    log: list[c.Command] = [c.SubmitTasks(0.0, tasks, 1000)]
    log += [c.ClaimTasks(1.0 + i, W, ("q",), 7, 30.0, 20 * KiB) for i in range(10)]
    replayed = c.decode_commands(c.encode_commands(log))
    first, second = Machine(), Machine()
    out_a = [first.apply(cmd, Effects()) for cmd in log]
    out_b = [second.apply(cmd, Effects()) for cmd in replayed]
    assert out_a == out_b
    assert first.count(TaskState.PENDING) == second.count(TaskState.PENDING) > 0


# -- the service: listing pages and status budgets ---------------------------------------------


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


@asynccontextmanager
async def service() -> AsyncIterator[BrokerService]:
    store = MemoryStore(MemoryBacking())
    svc = BrokerService(load(env={}), store, recover(store, time.time()).machine)
    try:
        yield svc
    finally:
        await svc.drain()
        await svc.close()
        store.close()


async def completed(svc: BrokerService, results: list[bytes]) -> list[TaskId]:
    """Tasks completed with ``results``, durable, in id order."""
    reply, _ = svc.submit(ANYONE, [TaskSpec(task_type="t") for _ in results])
    got: list[ClaimedTask] = []
    svc.claim(ANYONE, W, ["default"], len(results), 0, got.extend)
    outcomes = [
        TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True, result=r)
        for t, r in zip(got, results, strict=True)
    ]
    await svc.confirmed(svc.report(ANYONE, outcomes)[1])
    return list(reply.ids)


def test_list_pages_hold_fewer_tasks_when_results_are_large_and_every_task_once() -> None:
    async def scenario() -> None:
        async with service() as svc:
            ids = await completed(svc, [b"r" * (300 * KiB)] * 10 + [b"s"] * 5)
            done = TaskFilter(state=TaskState.COMPLETED)
            pages: list[list[TaskId]] = []
            cursor = None
            while True:
                infos, cursor = svc.list_tasks(ANYONE, ListQuery(done, cursor, 100, 1024 * KiB))
                pages.append([TaskId(i.id) for i in infos])
                if cursor is None:
                    break
            assert [i for page in pages for i in page] == ids
            assert all(len(page) <= 3 for page in pages[:3])  # 3 x 300 KiB fit in 1 MiB
            assert len(pages[-1]) > 3  # the small ones share a page

    run(scenario)


def test_a_page_holds_one_task_even_when_it_alone_is_above_the_budget() -> None:
    async def scenario() -> None:
        async with service() as svc:
            ids = await completed(svc, [b"r" * (200 * KiB)] * 2)
            done = TaskFilter(state=TaskState.COMPLETED)
            infos, cursor = svc.list_tasks(ANYONE, ListQuery(done, None, 100, 64 * KiB))
            assert [i.id for i in infos] == ids[:1]
            infos, cursor = svc.list_tasks(ANYONE, ListQuery(done, cursor, 100, 64 * KiB))
            assert [i.id for i in infos] == ids[1:]
            assert cursor is None

    run(scenario)


def test_the_default_page_budget_applies_to_every_door() -> None:
    assert ListQuery().max_bytes == PAGE_BYTES
    with pytest.raises(ValidationError, match="max_bytes"):
        ListQuery(max_bytes=0)


def test_a_status_lookup_beyond_its_budget_is_refused_whole_naming_what_to_do() -> None:
    async def scenario() -> None:
        async with service() as svc:
            ids = await completed(svc, [b"r" * (100 * KiB)] * 3)
            assert len(svc.status(ANYONE, ids, False, max_bytes=400 * KiB)) == 3
            with pytest.raises(ValidationError) as got:
                svc.status(ANYONE, ids, False, max_bytes=250 * KiB)
            assert got.value.code is ErrorCode.REPLY_TOO_LARGE
            assert "the first 3 of the 3 tasks" in got.value.message
            assert "fewer ids" in got.value.message
            with pytest.raises(ValidationError, match="without include_payload") as alone:
                svc.status(ANYONE, ids[:1], True, max_bytes=50 * KiB)
            assert "alone" in alone.value.message
            assert len(svc.status(ANYONE, ids, True)) == 3  # no budget: REST and gRPC

    run(scenario)


# -- tags ---------------------------------------------------------------------------------------

SETTINGS = load(env={}, overrides={"broker.max_payload_size_bytes": 64 * KiB}).broker


class Ids:
    def new(self, now: float) -> TaskId:
        return make_task_id(int(now * 1000), next(_ids))


def make(tags: dict[str, str], payload: bytes = b"", index: int = 2) -> c.NewTask:
    spec = TaskSpec(task_type="t", payload=payload, tags=tags)
    return new_task(spec, 1.0, Ids(), SETTINGS, index)


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({f"k{i}": "v" for i in range(MAX_TAGS + 1)}, f"tasks[2].tags: {MAX_TAGS + 1} tags"),
        ({"": "v"}, "tasks[2].tags: key '' is 0 characters"),
        ({"k" * 257: "v"}, "is 257 characters; keys are 1..256"),
        ({"k": "v" * (TAG_VALUE_MAX_LEN + 1)}, "tasks[2].tags['k']: value of 1025 characters"),
    ],
    ids=["too many", "empty key", "long key", "long value"],
)
def test_bad_tags_are_refused_naming_the_field(tags: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError) as got:
        make(tags)
    assert got.value.code is ErrorCode.INVALID_ARGUMENT
    assert words in got.value.message


def test_tags_count_within_the_payload_limit() -> None:
    tags = {f"k{i}": "v" * 1000 for i in range(10)}  # about 10 KiB encoded
    assert make(tags, b"p" * (50 * KiB)).tags == tags
    with pytest.raises(ValidationError) as got:
        make(tags, b"p" * (60 * KiB))
    assert got.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "tasks[2].payload: 61440 bytes and 10" in got.value.message
    assert "bytes of tags" in got.value.message
    assert make({f"k{i}": "v" for i in range(MAX_TAGS)}).tags  # at the limits: fine
