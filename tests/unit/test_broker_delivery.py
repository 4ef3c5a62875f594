"""The bookkeeping of event delivery around durability: the backlog, pushes, kept states."""

from __future__ import annotations

import asyncio

from tq.broker.delivery import Backlog, Pushes, kept_states
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, make_task_id
from tq.core.model import Task, TaskState

A, B, C = (make_task_id(1, n) for n in (1, 2, 3))


def ev(task_id: TaskId, state: TaskState, at: float = 1.0) -> TaskEvent:
    return TaskEvent(task_id, state, "q", "t", at, 1)


def task(task_id: TaskId, state: TaskState, at: float) -> Task:
    return Task(task_id, "t", "q", b"", 100, state, created_at=0.0, updated_at=at)


class NotASink:
    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        raise AssertionError("pushes are bookkeeping only")

    def watch_ended(self, subscription_id: int) -> None:
        raise AssertionError("pushes are bookkeeping only")


def test_the_backlog_names_the_tasks_of_every_unpublished_event_as_batches_come_and_go() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        backlog = Backlog()
        first, second = loop.create_future(), loop.create_future()
        building = [ev(A, TaskState.PENDING)]
        assert backlog.ids(building) == {A}
        building.append(ev(B, TaskState.PENDING))  # the batch being built grows
        assert backlog.ids(building) == {A, B}
        backlog.write(first, building)
        building = [ev(C, TaskState.PENDING)]
        assert backlog.ids(building) == {A, B, C}
        backlog.write(second, building)
        assert backlog.durable(first) == [ev(A, TaskState.PENDING), ev(B, TaskState.PENDING)]
        assert backlog.ids([]) == {C}
        backlog.not_durable(second)  # kept until the rebuild
        assert backlog.ids([]) == {C} and not backlog.written
        assert backlog.take_failed() == [[ev(C, TaskState.PENDING)]]
        assert backlog.ids([]) == set()

    asyncio.run(main())


def test_a_published_event_supersedes_the_pushes_of_its_task_only() -> None:
    pushes, sink = Pushes(), NotASink()
    one = pushes.add(sink, 1, [A, B])
    two = pushes.add(sink, 2, [B, C])
    pushes.supersede([ev(B, TaskState.COMPLETED)])
    assert list(one.ids) == [A] and list(two.ids) == [C]
    pushes.keep_only(one, [])
    assert list(one.ids) == [] and set(pushes.by_task) == {C}
    pushes.keep_only(two, [C])
    assert list(two.ids) == [C]
    pushes.keep_only(two, [])
    assert pushes.by_task == {}


def test_only_the_states_a_failed_batch_gave_and_the_disk_kept_are_published_again() -> None:
    failed = [
        [ev(A, TaskState.COMPLETED, at=5.0), ev(B, TaskState.IN_PROGRESS, at=5.0)],
        [ev(B, TaskState.COMPLETED, at=6.0), ev(C, TaskState.PENDING, at=6.0)],
    ]
    rebuilt = {
        A: task(A, TaskState.COMPLETED, 5.0),  # kept
        B: task(B, TaskState.IN_PROGRESS, 5.0),  # the first batch kept, the second lost
        C: task(C, TaskState.DEAD_LETTER, 2.0),  # lost: as it was before (a retry undone)
    }
    kept = kept_states(failed, rebuilt.get)
    assert [(e.task_id, e.state) for e in kept] == [
        (A, TaskState.COMPLETED),
        (B, TaskState.IN_PROGRESS),
    ]
    assert kept_states(failed, lambda _: None) == []  # purged, or never on disk
