"""The service makes every claim carry the configured aging policy, on the direct path and
on the long-poll waiter path, naming the exempt queues it claims from (tq.broker.aging)."""

from __future__ import annotations

import asyncio
import time

from tests.unit.test_storage_guard import Disk, FaultyStore

from tq.broker.access import Principal
from tq.broker.aging import Aging
from tq.broker.service import BrokerService
from tq.config import BrokerSettings, load
from tq.core import commands as c
from tq.core.aging import AgingPolicy
from tq.core.ids import TaskId, WorkerId
from tq.core.model import Task, TaskState
from tq.core.replies import ClaimedTask
from tq.protocol.records import TaskSpec
from tq.storage import MemoryBacking
from tq.storage.recovery import recover

ANYONE = Principal.ANYONE
ON = {
    "broker.priority_aging_interval_s": "2.5",
    "broker.priority_aging_step": "7",
    "broker.priority_aging_max": "180",
    "broker.priority_aging_exempt_queues": "batch,bulk",
}
POLICY = AgingPolicy(2.5, 7, 180)


class Claims:
    """A cluster leader's sink, keeping the claim commands of each written batch."""

    def __init__(self) -> None:
        self.seen: list[c.ClaimTasks] = []

    def batch(self, commands: list[c.Command]) -> None:
        self.seen += [x for x in commands if isinstance(x, c.ClaimTasks)]


def claims_of(overrides: dict[str, str], queues: list[str], *, park: bool) -> c.ClaimTasks:
    async def main() -> c.ClaimTasks:
        store = FaultyStore(Disk(MemoryBacking()), read_only=False)
        sink = Claims()
        settings = load(env={}, overrides=overrides)
        svc = BrokerService(settings, store, recover(store, time.time()).machine, sink=sink)
        try:
            got: list[ClaimedTask] = []
            if park:  # nothing pending: the claim waits, and the submit's turn serves it
                svc.claim(ANYONE, WorkerId("w"), queues, 1, 5.0, got.extend)
                await svc.drain()
            svc.submit(ANYONE, [TaskSpec(task_type="t", queue=queues[0])])
            if not park:
                svc.claim(ANYONE, WorkerId("w"), queues, 1, 0, got.extend)
            await svc.drain()
            assert len(got) == 1
            return sink.seen[-1]
        finally:
            await svc.drain()
            await svc.close()
            store.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_a_direct_and_a_parked_claim_carry_the_policy() -> None:
    for park in (False, True):
        assert claims_of(ON, ["q"], park=park).aging == POLICY
        with_exempt = claims_of(ON, ["q", "bulk"], park=park).aging
        assert with_exempt == AgingPolicy(2.5, 7, 180, exempt_queues=("bulk",))
        assert claims_of(ON, ["bulk", "batch"], park=park).aging is None  # all exempt
        assert claims_of({}, ["q"], park=park).aging is None  # aging off: the default


def test_the_policy_by_queues_claimed() -> None:
    aging = Aging(load(env={}, overrides=ON).broker)
    assert aging.for_claim(["q", "r"]) is aging.policy == POLICY
    assert aging.for_claim(["bulk", "q", "bulk"]) == AgingPolicy(2.5, 7, 180, ("bulk",))
    assert aging.for_claim(["bulk", "bulk"]) is None
    assert Aging(BrokerSettings()).for_claim(["q"]) is None


def test_the_effective_priority_info_shows() -> None:
    aging = Aging(load(env={}, overrides=ON).broker)

    def pending(queue: str, *, ages: bool = True) -> Task:
        return Task(
            TaskId(b"\x01" * 16), "t", queue, b"", 100, TaskState.PENDING, 0.0, 0.0,
            aging=ages, queued_at=0.0,
        )  # fmt: skip

    assert aging.effective(pending("q"), 10.0) == 128  # four whole intervals of 7
    assert aging.effective(pending("q"), 1e6) == 180  # the cap
    assert aging.effective(pending("bulk"), 10.0) == 100  # exempt queue
    assert aging.effective(pending("q", ages=False), 10.0) == 100  # opted out
    running = pending("q")
    running.state = TaskState.IN_PROGRESS
    assert aging.effective(running, 10.0) is None
    assert Aging(BrokerSettings()).effective(pending("q"), 1e6) == 100  # aging off
