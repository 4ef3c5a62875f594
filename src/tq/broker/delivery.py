"""Event delivery around durability, for ``BrokerService``: each durable state of a task reaches
a subscription following it once. Events wait in the ``Backlog`` until their batch is durable,
or, if its fsync fails, until memory is rebuilt from the disk (then the states it kept are
published: ``kept_states``). A subscription starting while a task's latest state is not
published (finished, or in the backlog) gets a ``Push`` of its final state once durable, unless
an event of the task is published first (``Pushes.supersede``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from tq.broker.convert import state_event
from tq.broker.events import Sink
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId
from tq.core.model import Task, TaskState


class Backlog:
    """Events applied but not published yet, by batch: written batches waiting for their fsync,
    and written batches whose fsync failed (their tasks' states are known only after the
    rebuild). ``ids`` names their tasks: built lazily, on the rare paths that ask, so the per-
    batch cost is a dict entry."""

    def __init__(self) -> None:
        #: Written batches waiting for their fsync, in write order: batch future -> events.
        self.written: dict[asyncio.Future[None], list[TaskEvent]] = {}
        #: Events of written batches whose fsync failed, until ``take_failed``.
        self.failed: list[list[TaskEvent]] = []
        self._ids: set[TaskId] | None = None  # the ids of the above, when asked (None: stale)
        self._current: list[TaskEvent] | None = None  # the batch being built, as last asked
        self._absorbed = 0  # how many of its events the ids include

    def write(self, batch: asyncio.Future[None], events: list[TaskEvent]) -> None:
        """``batch`` was written (the events of the batch being built move here)."""
        self.written[batch] = events
        self._ids = None

    def durable(self, batch: asyncio.Future[None]) -> list[TaskEvent]:
        """``batch`` is durable: its events, to publish now."""
        self._ids = None
        return self.written.pop(batch)

    def drop(self, batch: asyncio.Future[None]) -> None:
        """``batch`` was refused (a cluster leader deposed before its entry was logged): its
        events are not published (if the log holds it after all, applying it tells them)."""
        self._ids = None
        self.written.pop(batch, None)

    def not_durable(self, batch: asyncio.Future[None]) -> None:
        """``batch``'s fsync failed: keep its events until the rebuild."""
        self.keep(self.written.pop(batch))

    def keep(self, events: list[TaskEvent]) -> None:
        """Events of a written batch that failed to be made durable (the disk may keep it)."""
        self._ids = None
        if events:
            self.failed.append(events)

    def forget(self) -> None:
        """The batch being built was dropped, never written: its events will not come."""
        self._ids = None

    def take_failed(self) -> list[list[TaskEvent]]:
        self._ids = None
        failed, self.failed = self.failed, []
        return failed

    def ids(self, current: list[TaskEvent]) -> set[TaskId]:
        """Tasks with events still to be published: in the backlog or in ``current``, the
        batch being built (which only grows until it is written: the set keeps up with it)."""
        ids = self._ids
        if ids is None or current is not self._current:
            batches = (*self.written.values(), *self.failed)
            ids = self._ids = {e.task_id for events in batches for e in events}
            self._current, self._absorbed = current, 0
        if len(current) > self._absorbed:
            ids.update(e.task_id for e in current[self._absorbed :])
            self._absorbed = len(current)
        return ids


class Push:
    """A subscription's final events owed once durable: ``ids`` shrinks as they are
    superseded."""

    __slots__ = ("ids", "sink", "subscription_id")

    def __init__(self, sink: Sink, subscription_id: int, ids: Iterable[TaskId]) -> None:
        self.sink = sink
        self.subscription_id = subscription_id
        self.ids = dict.fromkeys(ids)  # ordered: events go out in the order asked


class Pushes:
    """The pushes waiting for durability, indexed by task."""

    def __init__(self) -> None:
        self.by_task: dict[TaskId, set[Push]] = {}

    def add(self, sink: Sink, subscription_id: int, ids: Sequence[TaskId]) -> Push:
        push = Push(sink, subscription_id, ids)
        for task_id in push.ids:
            self.by_task.setdefault(task_id, set()).add(push)
        return push

    def supersede(self, events: Iterable[TaskEvent]) -> None:
        """These events were published, so every subscription following their tasks has
        heard of them: a push of those tasks would repeat them (or show a state since left)."""
        by_task = self.by_task
        for ev in events:
            for push in by_task.pop(ev.task_id, ()):
                push.ids.pop(ev.task_id, None)

    def keep_only(self, push: Push, ids: Iterable[TaskId]) -> None:
        """``push`` still waits for ``ids`` alone (none: it is done)."""
        keep = dict.fromkeys(ids)
        for task_id in [i for i in push.ids if i not in keep]:
            del push.ids[task_id]
            pushes = self.by_task.get(task_id)
            if pushes is not None:
                pushes.discard(push)
                if not pushes:
                    del self.by_task[task_id]


def kept_states(
    failed: list[list[TaskEvent]], find: Callable[[TaskId], Task | None]
) -> list[TaskEvent]:
    """After the rebuild: the state of each task a failed batch changed, where the rebuilt
    store (``find``) holds a state that batch gave it (same state, same time): the disk kept
    that change and nobody has heard of it. A task whose changes the disk lost is as it was
    before them, a state already published: telling it again would repeat it."""
    changes: dict[TaskId, set[tuple[TaskState, float]]] = {}
    for events in failed:
        for e in events:
            changes.setdefault(e.task_id, set()).add((e.state, e.at))
    out: list[TaskEvent] = []
    for task_id, states in changes.items():
        task = find(task_id)
        if task is not None and (task.state, task.updated_at) in states:
            out.append(state_event(task))
    return out
