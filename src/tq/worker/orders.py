"""The worker's side of worker control: carry out the broker's orders, each once, in order.

Orders arrive pushed (WORKER_ORDERS) and repeated in every heartbeat and register reply until
acknowledged, so the same order is often seen several times: ``done`` (the highest number
carried out) makes each take effect once. A shutdown is acknowledged at once (the heartbeats
then say the worker drains); a change of queues only once a registration with the new queues
succeeded, so an acknowledged order means the broker's record shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tq.protocol import WorkerOrderInfo

_log = logging.getLogger(__name__)


class OrderTaker:
    """Holds the worker's queues as orders change them; ``shutdown`` and ``changed`` are the
    worker's (start the graceful stop; register again with ``queues`` before claiming)."""

    def __init__(
        self,
        worker_id: str,
        queues: Sequence[str],
        *,
        shutdown: Callable[[], None],
        changed: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.queues = list(queues)
        self._shutdown = shutdown
        self._changed = changed
        #: The highest order number carried out, and the highest the broker may be told of.
        self.done = 0
        self.acked = 0
        self._stopping = False

    def take(self, orders: Sequence[WorkerOrderInfo]) -> None:
        """Carry out the orders not carried out yet (idempotent: any order may come again)."""
        changed = False
        for order in sorted(orders, key=lambda o: o.seq):
            if order.seq <= self.done:
                continue
            self.done = order.seq
            _log.info(
                "worker.order id=%s seq=%d action=%s queue=%s",
                self.worker_id, order.seq, order.action, order.queue or "-",
            )  # fmt: skip
            if order.action == "shutdown":
                self._stopping = True
                self._shutdown()
            elif self._stopping:
                continue  # the broker refuses these once it knows; nothing is claimed now
            elif order.action == "consume":
                if order.queue not in self.queues:
                    self.queues.append(order.queue)
                    changed = True
            elif order.action == "stop_consuming":
                if order.queue in self.queues and len(self.queues) > 1:
                    self.queues.remove(order.queue)
                    changed = True
            else:  # a newer broker's order: acknowledged, so it is not repeated for ever
                _log.warning("worker.order_unknown seq=%d action=%s", order.seq, order.action)
        if changed:
            self._changed()  # acknowledged by the registration that shows the new queues
        else:
            self.acked = self.done

    def registered(self, done: int) -> None:
        """A registration that carried every order up to ``done`` succeeded."""
        self.acked = max(self.acked, done)
