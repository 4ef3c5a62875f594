"""Task event subscriptions: by task id (e.g. a client waiting for a result), by queue, or all.

Events are published only after the batch that caused them is durable, so a client never
sees a result the broker could still lose. A one-shot (``until_terminal``) subscription for a
task ends with that task's terminal event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from tq.core.effects import TaskEvent
from tq.core.ids import TaskId


class Sink(Protocol):
    def push_event(self, subscription_id: int, event: TaskEvent) -> None: ...


class Subscription:
    __slots__ = ("all", "queues", "sink", "subscription_id", "task_ids", "until_terminal")

    def __init__(
        self,
        sink: Sink,
        subscription_id: int,
        task_ids: Iterable[TaskId],
        queues: Iterable[str],
        all_tasks: bool,
        until_terminal: bool,
    ) -> None:
        self.sink = sink
        self.subscription_id = subscription_id
        self.task_ids = set(task_ids)
        self.queues = tuple(queues)
        self.all = all_tasks
        self.until_terminal = until_terminal


class EventHub:
    def __init__(self) -> None:
        self._by_task: dict[TaskId, list[Subscription]] = {}
        self._by_queue: dict[str, list[Subscription]] = {}
        self._all: list[Subscription] = []
        self._by_sink: dict[int, dict[int, Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        for task_id in sub.task_ids:
            self._by_task.setdefault(task_id, []).append(sub)
        for q in sub.queues:
            self._by_queue.setdefault(q, []).append(sub)
        if sub.all:
            self._all.append(sub)
        self._by_sink.setdefault(id(sub.sink), {})[sub.subscription_id] = sub

    def remove(self, sink: Sink, subscription_id: int) -> None:
        sub = self._by_sink.get(id(sink), {}).pop(subscription_id, None)
        if sub is None:
            return
        for task_id in sub.task_ids:
            self._discard(self._by_task, task_id, sub)
        for q in sub.queues:
            self._discard(self._by_queue, q, sub)
        if sub in self._all:
            self._all.remove(sub)

    def remove_sink(self, sink: Sink) -> None:
        for subscription_id in list(self._by_sink.get(id(sink), {})):
            self.remove(sink, subscription_id)
        self._by_sink.pop(id(sink), None)

    @staticmethod
    def _discard(index: dict[Any, list[Subscription]], key: Any, sub: Subscription) -> None:
        subs = index.get(key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del index[key]

    def publish(self, events: Iterable[TaskEvent], _owner: object = None) -> None:
        if not (self._by_task or self._by_queue or self._all):
            return
        for ev in events:
            # A subscription matching an event several ways (its id, its queue, all) gets it
            # once; the set is built only when more than one index could match.
            by_task = self._by_task.get(ev.task_id, ())
            by_queue = self._by_queue.get(ev.queue, ())
            if (bool(by_task) + bool(by_queue) + bool(self._all)) > 1:
                seen: set[int] = set()
                for sub in (*by_task, *by_queue, *self._all):
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        sub.sink.push_event(sub.subscription_id, ev)
                self._end_one_shots(ev)
                continue
            for sub in by_task:
                sub.sink.push_event(sub.subscription_id, ev)
            self._end_one_shots(ev)
            for sub in by_queue:
                sub.sink.push_event(sub.subscription_id, ev)
            for sub in self._all:
                sub.sink.push_event(sub.subscription_id, ev)

    def _end_one_shots(self, ev: TaskEvent) -> None:
        """A terminal event ends the ``until_terminal`` interest in its task."""
        if ev.state.is_terminal and ev.task_id in self._by_task:
            for sub in list(self._by_task[ev.task_id]):
                if sub.until_terminal:
                    sub.task_ids.discard(ev.task_id)
                    self._discard(self._by_task, ev.task_id, sub)
                    if not sub.task_ids and not sub.queues and not sub.all:
                        self.remove(sub.sink, sub.subscription_id)

    def has_sink(self, sink: Sink) -> bool:
        return bool(self._by_sink.get(id(sink)))

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_sink.values())
