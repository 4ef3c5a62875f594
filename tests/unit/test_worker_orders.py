"""The worker carries each order out once, in order, and acknowledges a queue change only once
a registration showed it (``tq.worker.orders``)."""

from __future__ import annotations

from tq.protocol import WorkerOrderInfo
from tq.worker.orders import OrderTaker


class Spy:
    def __init__(self, queues: list[str]) -> None:
        self.stops = 0
        self.changes = 0
        self.taker = OrderTaker("w", queues, shutdown=self.stop, changed=self.change)

    def stop(self) -> None:
        self.stops += 1

    def change(self) -> None:
        self.changes += 1


def order(seq: int, action: str, queue: str = "") -> WorkerOrderInfo:
    return WorkerOrderInfo(seq=seq, action=action, queue=queue, at=1.0)


def test_orders_seen_again_take_effect_once_and_in_number_order() -> None:
    spy = Spy(["a"])
    orders = [order(4, "stop_consuming", "a"), order(3, "consume", "b")]
    spy.taker.take(orders)
    spy.taker.take(orders)  # the heartbeat reply repeats what the push brought
    assert spy.taker.queues == ["b"]
    assert (spy.changes, spy.taker.done) == (1, 4)


def test_a_queue_change_is_acknowledged_by_the_registration_that_shows_it() -> None:
    spy = Spy(["a"])
    spy.taker.take([order(1, "consume", "b")])
    assert spy.taker.acked == 0  # heartbeats keep it pending until the worker registered
    spy.taker.registered(spy.taker.done)
    assert spy.taker.acked == 1


def test_a_shutdown_is_acknowledged_at_once_and_queue_orders_after_it_are_moot() -> None:
    spy = Spy(["a"])
    spy.taker.take([order(7, "shutdown"), order(8, "consume", "b")])
    assert (spy.stops, spy.changes, spy.taker.queues, spy.taker.acked) == (1, 0, ["a"], 8)


def test_the_last_queue_is_kept_and_an_unknown_order_is_acknowledged_not_repeated() -> None:
    spy = Spy(["a"])
    spy.taker.take([order(1, "stop_consuming", "a"), order(2, "rebalance")])
    assert (spy.taker.queues, spy.changes, spy.taker.acked) == (["a"], 0, 2)
