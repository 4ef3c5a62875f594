"""What applying commands produces besides replies: storage mutations and task events.

One ``Effects`` collects the output of every command applied in one group commit, so the
caller writes one batch and publishes the events once that batch is durable.
"""

from __future__ import annotations

import msgspec

from tq.core.ids import TaskId, WorkerId
from tq.core.layout import Family, Mutation
from tq.core.model import Task, TaskState, encode_task


class TaskEvent(msgspec.Struct, frozen=True, gc=False):
    """A task changed state (or reported progress). A snapshot: safe to publish later."""

    task_id: TaskId
    state: TaskState
    queue: str
    task_type: str
    at: float
    attempts: int
    result: bytes | None = None
    error: str | None = None
    worker_id: WorkerId | None = None
    progress: int | None = None
    progress_message: str | None = None
    error_type: str | None = None


class Effects:
    __slots__ = ("events", "mutations")

    def __init__(self) -> None:
        self.mutations: list[Mutation] = []
        self.events: list[TaskEvent] = []

    def put_task(self, family: Family, task: Task) -> None:
        self.mutations.append((family, task.id, encode_task(task)))

    def delete(self, family: Family, key: bytes) -> None:
        self.mutations.append((family, key, None))

    def put(self, family: Family, key: bytes, value: bytes) -> None:
        self.mutations.append((family, key, value))

    def event(self, task: Task, *, progress: bool = False) -> None:
        state = task.state
        self.events.append(
            TaskEvent(
                task.id,
                state,
                task.queue,
                task.task_type,
                task.updated_at,
                task.attempts,
                task.result if state is TaskState.COMPLETED else None,
                task.error,
                task.worker_id,
                task.progress if progress else None,
                task.progress_message if progress else None,
                task.error_type,
            )
        )

    def clear(self) -> None:
        self.mutations.clear()
        self.events.clear()
