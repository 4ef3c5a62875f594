"""Worker inspect and control for every door: what a worker runs, reserved and is ordered, and
giving it orders (an ``OrderWorker`` command, pushed to the worker once durable).

A worker is reached on the connection it last registered or heartbeat on (``Reaches``); the
push is only a shortcut: heartbeat and register replies repeat every order until the worker
acknowledges it, so a push lost with its connection, or never sent because the worker is
connected to another node, costs one heartbeat interval. The service checks access first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tq.core import commands as c
from tq.core.control import OrderAction, WorkerOrder
from tq.core.ids import TaskId, WorkerId
from tq.core.layout import WorkerRecord
from tq.core.replies import OrdersReply
from tq.errors import ErrorCode, NotFoundError
from tq.protocol.messages import MAX_INSPECT_IDS
from tq.protocol.records import WorkerInfo, WorkerOrderInfo

if TYPE_CHECKING:
    from tq.broker.service import BrokerService


class OrderSink(Protocol):
    """A worker's connection, as a door keeps it: the broker pushes orders on it."""

    def push_orders(self, worker_id: str, orders: list[WorkerOrderInfo]) -> None: ...


class Reaches:
    """Which connection each worker was last heard on (only those of this node)."""

    def __init__(self) -> None:
        self._sink: dict[WorkerId, OrderSink] = {}
        self._workers: dict[object, set[WorkerId]] = {}  # by connection

    def heard(self, worker_id: WorkerId, sink: OrderSink) -> None:
        old = self._sink.get(worker_id)
        if old is sink:
            return
        if old is not None:
            self._workers[old].discard(worker_id)
        self._sink[worker_id] = sink
        self._workers.setdefault(sink, set()).add(worker_id)

    def drop(self, sink: object) -> None:
        """The connection closed: its workers are reached again once heard on another."""
        for worker_id in self._workers.pop(sink, set()):
            del self._sink[worker_id]

    def push(self, worker_id: WorkerId, orders: list[WorkerOrderInfo]) -> None:
        sink = self._sink.get(worker_id)
        if sink is not None:
            sink.push_orders(worker_id, orders)


def order_info(order: WorkerOrder) -> WorkerOrderInfo:
    return WorkerOrderInfo(seq=order.seq, action=order.action.value, queue=order.queue, at=order.at)


def orders_info(orders: tuple[WorkerOrder, ...]) -> list[WorkerOrderInfo]:
    return [order_info(o) for o in orders]


def split_held(rec: WorkerRecord, held: list[TaskId]) -> tuple[list[TaskId], list[TaskId]]:
    """The held tasks it runs (started, its last heartbeat said) and those it reserved."""
    started = set(rec.started)
    running = [i for i in held if i in started]
    reserved = [i for i in held if i not in started]
    return running, reserved


def worker_info(rec: WorkerRecord, held: list[TaskId], now: float, dead_after: float) -> WorkerInfo:
    running, reserved = split_held(rec, held)
    return WorkerInfo(
        id=rec.id, name=rec.name, queues=list(rec.queues), concurrency=max(1, rec.concurrency),
        hostname=rec.hostname, pid=rec.pid, registered_at=rec.registered_at,
        last_heartbeat=rec.last_heartbeat, cpu_percent=max(0.0, rec.stats.cpu_percent),
        memory_rss=rec.stats.memory_rss, running=len(running),
        alive=rec.last_heartbeat + dead_after >= now, reserved=len(reserved),
        draining=rec.draining, orders=len(rec.orders),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Inspection:
    """One worker as WORKER_INSPECT shows it (ids at most ``MAX_INSPECT_IDS`` of each kind)."""

    worker: WorkerInfo
    running: list[TaskId]
    reserved: list[TaskId]
    orders: list[WorkerOrderInfo]


def record(service: BrokerService, worker_id: WorkerId) -> WorkerRecord:
    rec = service.machine.worker(worker_id)
    if rec is None:
        raise NotFoundError(f"no worker with id {worker_id!r}", ErrorCode.WORKER_NOT_FOUND)
    return rec


def inspect(service: BrokerService, rec: WorkerRecord) -> Inspection:
    held = service.machine.held_by(rec.id)
    running, reserved = split_held(rec, held)
    info = worker_info(rec, held, time.time(), service.dead_after)
    return Inspection(
        info, running[:MAX_INSPECT_IDS], reserved[:MAX_INSPECT_IDS], orders_info(rec.orders)
    )


@dataclass(frozen=True, slots=True)
class Ordered:
    """The order stored (None: it would change nothing) and every order still pending."""

    order: WorkerOrderInfo | None
    pending: list[WorkerOrderInfo]


async def order(
    service: BrokerService, worker_id: WorkerId, action: OrderAction, queue: str
) -> Ordered:
    """Apply the order; once durable it is pushed to the worker (if this node reaches it) and
    the caller answered."""
    reply, durable = service.run(c.OrderWorker(time.time(), worker_id, action, queue), OrdersReply)
    pending = orders_info(reply.pending)
    if reply.order is not None:
        durable.add_done_callback(_push_when_durable(service, worker_id, pending))
    await service.confirmed(durable)
    return Ordered(None if reply.order is None else order_info(reply.order), pending)


def _push_when_durable(
    service: BrokerService, worker_id: WorkerId, pending: list[WorkerOrderInfo]
) -> Callable[[asyncio.Future[None]], None]:
    def push(f: asyncio.Future[None]) -> None:
        if not f.cancelled() and f.exception() is None:
            service.reaches.push(worker_id, pending)

    return push
