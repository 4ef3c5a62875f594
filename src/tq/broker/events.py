"""Task event subscriptions: by task id (e.g. a client waiting for a result), by queue, or all.

Rules: events are published only after the batch that caused them is durable, so nobody
sees a state the broker could still lose. A subscription matching an event several ways (its
id, its queue, all) gets it once. With ``until_terminal`` a subscription gets, for each of its
task ids, only that task's terminal event, after which the id is forgotten; when nothing is
left to follow, the subscription ends and its sink hears ``watch_ended``. A subscription is
named by its sink and an id the sink chose; adding one under a name in use replaces it.
What each sink follows is counted (``following``), for the service's per-subscriber caps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from tq.core.effects import TaskEvent
from tq.core.ids import TaskId


class Sink(Protocol):
    """Where a subscription's events go (a connection, a WebSocket, a gRPC stream).

    Called on the loop thread from the publish path: it must only buffer, never block."""

    def push_event(self, subscription_id: int, event: TaskEvent) -> None: ...

    def watch_ended(self, subscription_id: int) -> None:
        """Every id of an ``until_terminal`` subscription had its terminal event."""


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

    @property
    def exhausted(self) -> bool:
        return not (self.task_ids or self.queues or self.all)

    @property
    def queue_count(self) -> int:
        """Queues followed, a subscription to every task counting as one."""
        return len(self.queues) + self.all


class Following:
    """What one sink follows across its subscriptions, kept as they change."""

    __slots__ = ("queues", "subscriptions", "task_ids")

    def __init__(self) -> None:
        self.subscriptions = 0
        self.task_ids = 0
        self.queues = 0  # ``Subscription.queue_count``


_NOTHING = Following()  # what a sink without subscriptions follows; never changed


class EventHub:
    def __init__(self) -> None:
        self._by_task: dict[TaskId, list[Subscription]] = {}
        self._by_queue: dict[str, list[Subscription]] = {}
        self._all: list[Subscription] = []
        self._by_sink: dict[int, dict[int, Subscription]] = {}
        self._following: dict[int, Following] = {}

    def add(self, sub: Subscription) -> None:
        """Start ``sub``, replacing the sink's subscription of the same id if there is one."""
        self.remove(sub.sink, sub.subscription_id)
        for task_id in sub.task_ids:
            self._by_task.setdefault(task_id, []).append(sub)
        for q in sub.queues:
            self._by_queue.setdefault(q, []).append(sub)
        if sub.all:
            self._all.append(sub)
        self._by_sink.setdefault(id(sub.sink), {})[sub.subscription_id] = sub
        f = self._following.get(id(sub.sink))
        if f is None:
            f = self._following[id(sub.sink)] = Following()
        f.subscriptions += 1
        f.task_ids += len(sub.task_ids)
        f.queues += sub.queue_count

    def get(self, sink: Sink, subscription_id: int) -> Subscription | None:
        return self._by_sink.get(id(sink), {}).get(subscription_id)

    def following(self, sink: Sink) -> Following:
        """What ``sink`` follows now (read it, never change it)."""
        return self._following.get(id(sink), _NOTHING)

    def remove(self, sink: Sink, subscription_id: int) -> None:
        subs = self._by_sink.get(id(sink))
        sub = None if subs is None else subs.pop(subscription_id, None)
        if sub is None:
            return
        if not subs:
            del self._by_sink[id(sink)]
            del self._following[id(sink)]
        else:
            f = self._following[id(sink)]
            f.subscriptions -= 1
            f.task_ids -= len(sub.task_ids)
            f.queues -= sub.queue_count
        for task_id in sub.task_ids:
            self._discard(self._by_task, task_id, sub)
        for q in sub.queues:
            self._discard(self._by_queue, q, sub)
        if sub in self._all:
            self._all.remove(sub)

    def remove_sink(self, sink: Sink) -> None:
        for subscription_id in list(self._by_sink.get(id(sink), {})):
            self.remove(sink, subscription_id)

    @staticmethod
    def _discard(index: dict[Any, list[Subscription]], key: Any, sub: Subscription) -> None:
        subs = index.get(key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del index[key]

    def publish(self, events: Iterable[TaskEvent]) -> None:
        if not (self._by_task or self._by_queue or self._all):
            return
        for ev in events:
            by_task = self._by_task.get(ev.task_id)
            by_queue = self._by_queue.get(ev.queue, ())
            terminal = ev.state.is_terminal
            if (by_task is not None) + bool(by_queue) + bool(self._all) > 1:
                # Several indexes may name one subscription: the set is built only then.
                seen: set[int] = set()
                for sub in (*by_queue, *self._all):
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        sub.sink.push_event(sub.subscription_id, ev)
                for sub in by_task or ():
                    if id(sub) not in seen and (terminal or not sub.until_terminal):
                        sub.sink.push_event(sub.subscription_id, ev)
            else:
                if by_task is not None:
                    for sub in by_task:
                        if terminal or not sub.until_terminal:
                            sub.sink.push_event(sub.subscription_id, ev)
                for sub in by_queue:
                    sub.sink.push_event(sub.subscription_id, ev)
                for sub in self._all:
                    sub.sink.push_event(sub.subscription_id, ev)
            if terminal and by_task is not None:
                self._end_one_shots(ev.task_id)

    def push_to(self, sink: Sink, subscription_id: int, events: Iterable[TaskEvent]) -> None:
        """Deliver ``events`` (final states of tasks that had already finished when the
        subscription started) to that subscription alone, by its rules, if it still exists."""
        for ev in events:
            sub = self.get(sink, subscription_id)
            if sub is None or ev.task_id not in sub.task_ids:
                continue
            if ev.state.is_terminal or not sub.until_terminal:
                sink.push_event(subscription_id, ev)
            if ev.state.is_terminal and sub.until_terminal:
                self._forget(sub, ev.task_id)

    def _end_one_shots(self, task_id: TaskId) -> None:
        """A terminal event ends the ``until_terminal`` interest in its task."""
        for sub in [s for s in self._by_task.get(task_id, ()) if s.until_terminal]:
            self._forget(sub, task_id)

    def _forget(self, sub: Subscription, task_id: TaskId) -> None:
        if task_id in sub.task_ids:
            sub.task_ids.discard(task_id)
            self._following[id(sub.sink)].task_ids -= 1
        self._discard(self._by_task, task_id, sub)
        if sub.exhausted:
            self.remove(sub.sink, sub.subscription_id)
            sub.sink.watch_ended(sub.subscription_id)

    def has_sink(self, sink: Sink) -> bool:
        return bool(self._by_sink.get(id(sink)))

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_sink.values())
