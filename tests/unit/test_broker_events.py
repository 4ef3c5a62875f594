"""The broker's event hub: who gets which event, once."""

from __future__ import annotations

from tq.broker.events import EventHub, Subscription
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, make_task_id
from tq.core.model import TaskState


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, TaskId, TaskState]] = []

        self.ended: list[int] = []

    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        self.got.append((subscription_id, event.task_id, event.state))

    def watch_ended(self, subscription_id: int) -> None:
        self.ended.append(subscription_id)


def ev(task_id: TaskId, state: TaskState, queue: str = "q") -> TaskEvent:
    return TaskEvent(task_id, state, queue, "t", 1.0, 1)


def test_a_subscription_matching_an_event_several_ways_gets_it_once() -> None:
    hub, sink = EventHub(), Sink()
    a = make_task_id(1, 1)
    hub.add(Subscription(sink, 7, [a], ["q"], True, False))
    hub.publish([ev(a, TaskState.PENDING), ev(make_task_id(1, 2), TaskState.PENDING)])
    assert sink.got == [(7, a, TaskState.PENDING), (7, make_task_id(1, 2), TaskState.PENDING)]


def test_a_one_shot_subscription_ends_with_its_tasks_terminal_event() -> None:
    hub, sink, other = EventHub(), Sink(), Sink()
    a = make_task_id(1, 1)
    hub.add(Subscription(sink, 1, [a], [], False, True))
    hub.add(Subscription(other, 2, [], ["q"], False, False))
    hub.publish([ev(a, TaskState.COMPLETED)])
    hub.publish([ev(a, TaskState.COMPLETED)])  # a duplicate later: nobody waits on it now
    assert sink.got == [(1, a, TaskState.COMPLETED)]
    assert other.got == [(2, a, TaskState.COMPLETED)] * 2
    assert not hub.has_sink(sink)


def test_a_one_shot_subscription_gets_only_terminal_events_of_its_ids() -> None:
    hub, sink = EventHub(), Sink()
    a, b = make_task_id(1, 1), make_task_id(1, 2)
    hub.add(Subscription(sink, 1, [a, b], [], False, True))
    hub.publish([ev(a, TaskState.PENDING), ev(a, TaskState.IN_PROGRESS), ev(a, TaskState.FAILED)])
    assert sink.got == []
    hub.publish([ev(a, TaskState.COMPLETED)])
    assert sink.got == [(1, a, TaskState.COMPLETED)]
    assert sink.ended == []  # b is still followed
    hub.publish([ev(b, TaskState.CANCELLED)])
    assert sink.got[-1] == (1, b, TaskState.CANCELLED)
    assert sink.ended == [1]
    assert not hub.has_sink(sink)


def test_a_one_shot_subscription_that_also_follows_a_queue_gets_its_events() -> None:
    hub, sink = EventHub(), Sink()
    a = make_task_id(1, 1)
    hub.add(Subscription(sink, 1, [a], ["q"], False, True))
    hub.publish([ev(a, TaskState.PENDING)])
    assert sink.got == [(1, a, TaskState.PENDING)]


def test_adding_under_a_name_in_use_replaces_that_subscription() -> None:
    hub, sink = EventHub(), Sink()
    a, b = make_task_id(1, 1), make_task_id(1, 2)
    hub.add(Subscription(sink, 1, [a], [], False, False))
    hub.add(Subscription(sink, 1, [b], [], False, False))
    hub.publish([ev(a, TaskState.PENDING), ev(b, TaskState.PENDING)])
    assert sink.got == [(1, b, TaskState.PENDING)]
    assert len(hub) == 1


def test_late_final_events_go_to_their_subscription_only_and_end_a_one_shot() -> None:
    hub, sink, other = EventHub(), Sink(), Sink()
    a = make_task_id(1, 1)
    hub.add(Subscription(sink, 1, [a], [], False, True))
    hub.add(Subscription(other, 1, [a], [], False, False))
    hub.push_to(sink, 1, [ev(a, TaskState.COMPLETED)])
    assert sink.got == [(1, a, TaskState.COMPLETED)] and sink.ended == [1]
    assert other.got == []
    hub.push_to(sink, 1, [ev(a, TaskState.COMPLETED)])  # gone: nothing more
    assert sink.got == [(1, a, TaskState.COMPLETED)]


def following(hub: EventHub, sink: Sink) -> tuple[int, int, int]:
    f = hub.following(sink)
    return f.subscriptions, f.task_ids, f.queues


def test_what_a_sink_follows_is_counted_as_its_subscriptions_change() -> None:
    hub, sink, other = EventHub(), Sink(), Sink()
    a, b, c = make_task_id(1, 1), make_task_id(1, 2), make_task_id(1, 3)
    hub.add(Subscription(sink, 1, [a, b], ["q1", "q2"], False, True))
    hub.add(Subscription(sink, 2, [], [], True, False))  # all: counts as one queue
    hub.add(Subscription(other, 1, [c], [], False, False))
    assert following(hub, sink) == (2, 2, 3)
    hub.add(Subscription(sink, 1, [c], ["q1"], False, True))  # replaces subscription 1
    assert following(hub, sink) == (2, 1, 2)
    hub.publish([ev(c, TaskState.COMPLETED)])  # the one-shot id is forgotten
    assert following(hub, sink) == (2, 0, 2)
    hub.remove(sink, 2)
    assert following(hub, sink) == (1, 0, 1)
    hub.remove_sink(sink)
    assert following(hub, sink) == (0, 0, 0)
    assert following(hub, other) == (1, 1, 0)


def test_a_one_shot_subscription_that_ends_leaves_nothing_counted() -> None:
    hub, sink = EventHub(), Sink()
    a = make_task_id(1, 1)
    hub.add(Subscription(sink, 1, [a], [], False, True))
    hub.push_to(sink, 1, [ev(a, TaskState.COMPLETED)])
    assert sink.ended == [1]
    assert following(hub, sink) == (0, 0, 0)
