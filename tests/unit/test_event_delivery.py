"""Task events reach each subscription once, and only durable states, around batches that are
written but not yet durable and batches whose fsync fails (on the injected-fault rig of
``test_storage_guard``): the disk may keep such a batch or lose it, and every kind of
subscription (by id, until_terminal, by queue, all) learns what it kept, once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from tests.unit.test_storage_guard import Disk, broker, claim, complete, submit, until

from tq.broker.access import Principal
from tq.broker.requests import Watch
from tq.broker.service import BrokerService
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, WorkerId
from tq.core.model import TaskState
from tq.core.replies import ClaimedTask
from tq.errors import ErrorCode, StorageError
from tq.protocol.records import TaskOutcome

ANYONE = Principal.ANYONE

COMPLETED, DEAD, PENDING = TaskState.COMPLETED, TaskState.DEAD_LETTER, TaskState.PENDING
IN_PROGRESS = TaskState.IN_PROGRESS
#: Leases that outlast each test: a lease running out would add events of its own.
LONG_LEASES: dict[str, object] = {"broker.lease_duration_s": 60.0}


class Sink:
    """A connection: what each of its subscriptions heard."""

    def __init__(self) -> None:
        self.got: list[tuple[int, TaskId, TaskState]] = []
        self.ended: list[int] = []

    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        self.got.append((subscription_id, event.task_id, event.state))

    def watch_ended(self, subscription_id: int) -> None:
        self.ended.append(subscription_id)

    def heard(self) -> Counter[tuple[int, TaskId, TaskState]]:
        return Counter(self.got)


def watch_every_way(service: BrokerService, sink: Sink, task_id: TaskId) -> None:
    """1: client.result() (until_terminal), 2: the id, 3: its queue, 4: everything."""
    service.watch(ANYONE, sink, 1, Watch((task_id,), until_terminal=True))
    service.watch(ANYONE, sink, 2, Watch((task_id,)))
    service.watch(ANYONE, sink, 3, Watch(queues=("default",)))
    service.watch(ANYONE, sink, 4, Watch(all=True))


async def settled(service: BrokerService) -> None:
    """Every event and push due so far has gone out: one more batch made durable, one without
    task events (pushes run on the loop right after the fsync they waited for, so before a
    later fsync ends)."""
    await service.register(
        ANYONE, WorkerId("settle"), name="w", queues=["default"], concurrency=1, hostname="h", pid=1
    )
    await service.drain()


def test_a_batch_whose_fsync_failed_but_the_disk_kept_is_published_once_after_the_rebuild() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings=LONG_LEASES) as rig:
            s = rig.service
            (task_id,) = await submit(s)
            (task,) = claim(s)
            await s.drain()
            before = Sink()
            watch_every_way(s, before, task_id)
            disk.fail_syncs = True  # the write lands (page cache), its fsync fails
            disk.open_gate = gate = threading.Event()  # hold the rebuild
            _, durable = complete(s, task)
            with pytest.raises(StorageError, match="retry later"):
                await durable
            during = Sink()  # subscribes after the failure, before the rebuild
            during_ids = (task_id,)
            s.watch(ANYONE, during, 1, Watch(during_ids, until_terminal=True))
            s.watch(ANYONE, during, 2, Watch(during_ids))
            assert before.got == during.got == []  # nothing durable to tell yet
            disk.fail_syncs = False
            gate.set()
            await until("writes accepted again", s.ready)
            await settled(s)

            info = s.status(ANYONE, [task_id], include_payload=False)[0]
            assert info is not None and info.state == "completed"  # the disk kept it
            assert before.heard() == {(n, task_id, COMPLETED): 1 for n in (1, 2, 3, 4)}
            assert during.heard() == {(n, task_id, COMPLETED): 1 for n in (1, 2)}
            assert before.ended == during.ended == [1]  # client.result() has its answer

            # The worker retries its report (it was told STORAGE_ERROR): refused, no event.
            codes, durable = complete(s, task)
            await durable
            assert codes == [ErrorCode.INVALID_STATE]
            await settled(s)
            assert len(before.got) == 4 and len(during.got) == 2

    asyncio.run(main())


def test_a_batch_whose_fsync_failed_and_the_disk_lost_is_never_told_and_its_retry_is() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings=LONG_LEASES) as rig:
            s = rig.service
            (task_id,) = await submit(s)
            (task,) = claim(s)
            await s.drain()
            before = Sink()
            watch_every_way(s, before, task_id)
            disk.fail_syncs = disk.lose_unsynced = True
            _, durable = complete(s, task)
            with pytest.raises(StorageError, match="retry later"):
                await durable
            disk.fail_syncs = False
            await until("writes accepted again", s.ready)
            await settled(s)
            info = s.status(ANYONE, [task_id], include_payload=False)[0]
            assert info is not None and info.state == "in_progress"  # as everyone knew it
            assert before.got == []  # nothing to tell: no repeat of a state already heard

            codes, durable = complete(s, task)  # the worker's retry
            await durable
            assert codes == [0]
            await settled(s)
            assert before.heard() == {(n, task_id, COMPLETED): 1 for n in (1, 2, 3, 4)}
            assert before.ended == [1]

    asyncio.run(main())


def test_a_subscriber_of_a_retried_dead_letter_hears_it_is_dead_when_the_retry_is_lost() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings=LONG_LEASES) as rig:
            s = rig.service
            (task_id,) = await submit(s, max_retries=0)
            fail_it(s, *claim(s))
            await s.drain()
            earlier = Sink()
            s.watch(ANYONE, earlier, 1, Watch((task_id,)))
            await until("the dead letter's final event", lambda: earlier.got)

            disk.fail_syncs = disk.lose_unsynced = True
            codes, durable = s.retry_ids([task_id])  # live again, in memory only
            assert codes == [0]
            later = Sink()  # subscribes to what looks like a live task
            s.watch(ANYONE, later, 1, Watch((task_id,), until_terminal=True))
            s.watch(ANYONE, later, 2, Watch((task_id,)))
            with pytest.raises(StorageError, match="retry later"):
                await durable
            disk.fail_syncs = False
            await until("writes accepted again", s.ready)
            await settled(s)

            info = s.status(ANYONE, [task_id], include_payload=False)[0]
            assert info is not None and info.state == "dead_letter"  # the retry was lost
            assert later.heard() == {(1, task_id, DEAD): 1, (2, task_id, DEAD): 1}
            assert later.ended == [1]
            assert earlier.got == [(1, task_id, DEAD)]  # heard once, not again

    asyncio.run(main())


def test_a_subscriber_of_a_task_whose_final_batch_awaits_its_fsync_hears_the_end_once() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings=LONG_LEASES) as rig:
            s = rig.service
            ids = await submit(s, 2)
            first, second = claim(s, n=2)
            await s.drain()
            disk.sync_gate = gate = threading.Event()
            _, durable = complete(s, first)
            await until("the final batch written, its fsync held", lambda: disk.syncs_held > 0)
            sink = Sink()
            s.watch(ANYONE, sink, 1, Watch((first.id,)))
            s.watch(ANYONE, sink, 2, Watch((first.id,), until_terminal=True))
            _, also = complete(s, second)  # ends in the batch not yet written
            s.watch(ANYONE, sink, 3, Watch((second.id,)))
            s.watch(ANYONE, sink, 4, Watch((second.id,), until_terminal=True))
            assert sink.got == []  # nothing is durable yet
            gate.set()
            disk.sync_gate = None
            await asyncio.gather(durable, also)
            await settled(s)
            assert sink.got == [
                (1, ids[0], COMPLETED),
                (2, ids[0], COMPLETED),
                (3, ids[1], COMPLETED),
                (4, ids[1], COMPLETED),
            ]
            assert sink.ended == [2, 4]

            late = Sink()  # long after: the final state, pushed once
            s.watch(ANYONE, late, 1, Watch(tuple(ids)))
            await settled(s)
            assert late.got == [(1, ids[0], COMPLETED), (1, ids[1], COMPLETED)]

    asyncio.run(main())


def test_a_finished_task_ended_again_while_its_push_waits_is_heard_from_its_events_once() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings=LONG_LEASES) as rig:
            s = rig.service
            (task_id,) = await submit(s, max_retries=0)
            fail_it(s, *claim(s))
            await s.drain()
            disk.sync_gate = gate = threading.Event()
            s.register(
                ANYONE, WorkerId("w2"), name="w", queues=["q"], concurrency=1, hostname="h", pid=1
            )
            await until("an fsync held", lambda: disk.syncs_held > 0)
            sink = Sink()
            s.watch(ANYONE, sink, 1, Watch((task_id,)))  # a dead letter: its final state is owed
            assert s.retry_ids([task_id])[0] == [0]
            fail_it(s, *claim(s))  # and dead again, in a batch not durable when the push runs
            await until(
                "the batch written",
                lambda: (
                    (i := s.status(ANYONE, [task_id], False)[0]) is not None and i.attempts == 1
                ),
            )
            gate.set()
            disk.sync_gate = None
            await settled(s)
            # From its events, each once: no early push of a state not yet durable, no repeat.
            assert sink.got == [
                (1, task_id, PENDING),
                (1, task_id, IN_PROGRESS),
                (1, task_id, DEAD),
            ]

    asyncio.run(main())


def fail_it(service: BrokerService, task: ClaimedTask) -> None:
    """Report a claimed task failed (with max_retries=0: to the dead letters)."""
    outcome = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=False)
    codes, _ = service.report(ANYONE, [outcome])
    assert codes == [0]
