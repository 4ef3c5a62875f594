"""The service hands a cluster leader's sink each written batch: the commands that applied in
one loop turn, in order, and nothing else (a refused command, a batch whose write failed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from tests.unit.test_storage_guard import Disk, FaultyStore

from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.config import load
from tq.core import commands as c
from tq.core.ids import TaskId, WorkerId
from tq.core.replies import ClaimedTask
from tq.errors import ConflictError, StorageError
from tq.protocol.records import TaskSpec
from tq.storage import MemoryBacking
from tq.storage.recovery import recover

ANYONE = Principal.ANYONE
W = WorkerId("w1")


class Batches:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def batch(self, commands: list[c.Command]) -> None:
        self.seen.append([type(x).__name__ for x in commands])


def run(body: Callable[[BrokerService, Batches, Disk], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        disk = Disk(MemoryBacking())
        store = FaultyStore(disk, read_only=False)
        batches = Batches()
        svc = BrokerService(load(env={}), store, recover(store, time.time()).machine, sink=batches)
        try:
            await body(svc, batches, disk)
        finally:
            await svc.drain()
            await svc.close()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def submit(svc: BrokerService, n: int = 1) -> list[TaskId]:
    return list(svc.submit(ANYONE, [TaskSpec(task_type="t") for _ in range(n)])[0].ids)


def test_one_loop_turn_is_one_batch_of_its_commands_in_order() -> None:
    async def body(svc: BrokerService, batches: Batches, disk: Disk) -> None:
        submit(svc)
        got: list[ClaimedTask] = []
        svc.claim(ANYONE, W, ["default"], 1, 0, got.extend)
        submit(svc, 2)
        await svc.drain()
        svc.heartbeat(ANYONE, W, 0.0, 0, [t.id for t in got])
        await svc.drain()
        assert batches.seen == [["SubmitTasks", "ClaimTasks", "SubmitTasks"], ["Heartbeat"]]

    run(body)


def test_a_refused_command_is_not_in_the_batch() -> None:
    async def body(svc: BrokerService, batches: Batches, disk: Disk) -> None:
        submit(svc)
        with pytest.raises(ConflictError):
            svc.progress(ANYONE, TaskId(b"\x01" * 16), 1, 50, None)  # no such task
        await svc.drain()
        assert batches.seen == [["SubmitTasks"]]

    run(body)


def test_a_parked_claim_served_at_the_end_of_a_turn_is_in_that_turns_batch() -> None:
    async def body(svc: BrokerService, batches: Batches, disk: Disk) -> None:
        got: list[ClaimedTask] = []
        svc.claim(ANYONE, W, ["default"], 1, 5.0, got.extend)  # finds nothing: parks
        await svc.drain()
        submit(svc)
        await svc.drain()
        assert len(got) == 1
        assert batches.seen == [["ClaimTasks"], ["SubmitTasks", "ClaimTasks"]]

    run(body)


def test_a_batch_whose_write_failed_is_not_handed_over() -> None:
    async def body(svc: BrokerService, batches: Batches, disk: Disk) -> None:
        submit(svc)
        await svc.drain()
        disk.fail_next_writes = 1
        _, durable = svc.submit(ANYONE, [TaskSpec(task_type="t")])
        with pytest.raises(StorageError):
            await svc.confirmed(durable)
        assert batches.seen == [["SubmitTasks"]]

    run(body)


def test_without_a_sink_the_service_keeps_no_commands() -> None:
    async def main() -> None:
        store = FaultyStore(Disk(MemoryBacking()), read_only=False)
        svc = BrokerService(load(env={}), store, recover(store, time.time()).machine)
        submit(svc)
        assert svc.sink is None
        assert svc._commands is None
        await svc.drain()
        await svc.close()
        store.close()

    asyncio.run(asyncio.wait_for(main(), 30))
