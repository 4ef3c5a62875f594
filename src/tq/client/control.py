"""Worker inspect and control on AsyncClient: what a worker runs and reserved, and orders.

Orders (``shutdown_worker``, ``consume``, ``stop_consuming``) need an admin key; each returns
once the order is durable, with the order stored, or None when it changes nothing (the worker
does so already, or was ordered to). Sending one again is harmless for that reason, so a call
lost with its connection is sent again. The worker carries an order out within about a
second when connected to the broker that took it, else at its next heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tq.client.session import Session
from tq.core.ids import format_task_id
from tq.protocol import (
    WorkerControl,
    WorkerControlReply,
    WorkerInfo,
    WorkerInspect,
    WorkerInspectReply,
    WorkerOrderInfo,
    WorkerOrders,
)
from tq.protocol.records import OrderActionName


@dataclass(frozen=True, slots=True)
class WorkerDetail:
    """One worker: its record, the ids (canonical text) of the tasks it runs and of those it
    reserved (at most 1,000 each: ``worker.running`` and ``worker.reserved`` count them all),
    and its orders not acknowledged yet."""

    worker: WorkerInfo
    running: list[str]
    reserved: list[str]
    orders: list[WorkerOrderInfo]


class ControlCalls:
    """Mixed into AsyncClient."""

    _session: Session

    async def inspect_worker(self, worker_id: str) -> WorkerDetail:
        """NotFoundError (WORKER_NOT_FOUND) if the broker does not know the worker."""
        reply = await self._session.call(
            lambda rid: WorkerInspect(request_id=rid, worker_id=worker_id),
            WorkerInspectReply,
            retry=True,
        )
        return WorkerDetail(
            reply.worker,
            [format_task_id(i) for i in reply.running],
            [format_task_id(i) for i in reply.reserved],
            list(reply.orders),
        )

    async def shutdown_worker(self, worker_id: str) -> WorkerOrderInfo | None:
        """Ask a worker to stop gracefully, as SIGTERM does: it claims no more, hands back its
        reserved tasks, finishes those it runs (up to its shutdown timeout) and exits."""
        return await self._order(worker_id, "shutdown", "")

    async def consume(self, worker_id: str, queue: str) -> WorkerOrderInfo | None:
        """Ask a worker to claim tasks of ``queue`` too."""
        return await self._order(worker_id, "consume", queue)

    async def stop_consuming(self, worker_id: str, queue: str) -> WorkerOrderInfo | None:
        """Ask a worker to claim no more tasks of ``queue`` (those it holds still run);
        INVALID_ARGUMENT if it is the worker's only queue."""
        return await self._order(worker_id, "stop_consuming", queue)

    async def _order(
        self, worker_id: str, action: OrderActionName, queue: str
    ) -> WorkerOrderInfo | None:
        reply = await self._session.call(
            lambda rid: WorkerControl(
                request_id=rid, worker_id=worker_id, action=action, queue=queue
            ),
            WorkerControlReply,
            retry=True,
        )
        return reply.order

    def on_worker_orders(self, callback: Callable[[WorkerOrders], None] | None) -> None:
        """For a worker: ``callback`` hears the orders the broker pushes (on every connection
        the client opens from now on); None stops it."""
        self._session.set_order_listener(callback)
