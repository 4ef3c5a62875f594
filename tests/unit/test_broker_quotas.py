"""The per-subscriber caps: a subscription within them passes, one past any of them is refused
naming the setting, and a subscription that replaces another is charged only the difference."""

from __future__ import annotations

import pytest

from tq.broker.events import EventHub, Subscription
from tq.broker.quotas import MAX_REQUEST_QUEUES, Quotas, check_request_queues
from tq.config import BrokerSettings
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, make_task_id
from tq.errors import ErrorCode, ValidationError

QUOTAS = Quotas.of(
    BrokerSettings(
        max_subscriptions=3, max_watched_task_ids=4, max_watched_queues=2, max_parked_claims=2
    )
)


class Sink:
    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        pass

    def watch_ended(self, subscription_id: int) -> None:
        pass


def ids(n: int, start: int = 0) -> list[TaskId]:
    return [make_task_id(1, start + i) for i in range(n)]


def test_the_caps_are_read_from_the_broker_settings() -> None:
    expected = Quotas(subscriptions=3, task_ids=4, queues=2, parked_claims=2)
    assert expected == QUOTAS


@pytest.mark.parametrize(
    ("task_ids", "queues", "setting"),
    [(5, 0, "broker.max_watched_task_ids"), (0, 3, "broker.max_watched_queues")],
)
def test_a_subscription_past_a_cap_is_refused_naming_the_setting(
    task_ids: int, queues: int, setting: str
) -> None:
    hub = EventHub()
    with pytest.raises(ValidationError) as info:
        QUOTAS.check_watch(hub.following(Sink()), None, task_ids, queues)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert setting in info.value.message


def test_the_subscription_count_is_capped_but_a_replacement_is_not_an_extra_one() -> None:
    hub, sink = EventHub(), Sink()
    for n in range(1, 4):
        QUOTAS.check_watch(hub.following(sink), None, 1, 0)
        hub.add(Subscription(sink, n, ids(1, n), [], False, False))
    with pytest.raises(ValidationError, match=r"broker\.max_subscriptions"):
        QUOTAS.check_watch(hub.following(sink), None, 1, 0)
    # Replacing subscription 1 (one id) by one of two ids: 4 ids in all, at the cap.
    QUOTAS.check_watch(hub.following(sink), hub.get(sink, 1), 2, 0)
    with pytest.raises(ValidationError, match=r"broker\.max_watched_task_ids"):
        QUOTAS.check_watch(hub.following(sink), hub.get(sink, 1), 3, 0)


def test_parking_is_capped_by_claims_and_by_the_queue_names_they_hold() -> None:
    assert QUOTAS.may_park((1, 10), ["q"])
    assert not QUOTAS.may_park((2, 2), ["q"])  # max_parked_claims
    assert QUOTAS.may_park((1, MAX_REQUEST_QUEUES - 1), ["q"])
    assert not QUOTAS.may_park((1, MAX_REQUEST_QUEUES), ["q"])


def test_a_request_names_one_to_max_request_queues_queues() -> None:
    check_request_queues(["q"] * MAX_REQUEST_QUEUES)
    for bad in ([], ["q"] * (MAX_REQUEST_QUEUES + 1)):
        with pytest.raises(ValidationError, match="queues"):
            check_request_queues(bad)
