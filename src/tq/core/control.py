"""Worker control: orders for one worker (shut down, consume a queue, stop consuming one).

Rules: an order is stored on the worker's record until the worker acknowledges it, so it
survives broker restarts and failover, and it is repeated in every heartbeat reply until then.
Each order takes the next number of one machine-wide sequence that never goes back (kept in
``MachineMeta``), so a worker acknowledges "every order up to N" and acts on each at most
once, even when its record is forgotten and made again (reaped, then heard from). An order
that would change nothing (consume a queue it already consumes or is ordered to) is not
stored: ordering twice is harmless. A record keeps at most ``MAX_PENDING_ORDERS`` orders.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

import msgspec

from tq.core.ids import TaskId
from tq.errors import ConflictError, ErrorCode, ValidationError

if TYPE_CHECKING:
    from tq.core.layout import WorkerRecord

#: Orders a worker may have not yet acknowledged (it acknowledges within a heartbeat).
MAX_PENDING_ORDERS: Final = 32
#: Started task ids kept on a record from one heartbeat: a worker runs at most its
#: concurrency at once; this bounds what a bad heartbeat can make the broker store.
MAX_STARTED: Final = 1000
#: Longest queue name (as on the wire: ``tq.protocol.records.NAME_MAX_LEN``).
MAX_QUEUE_LEN: Final = 256


class OrderAction(StrEnum):
    SHUTDOWN = "shutdown"  #: drain and exit, as on SIGTERM
    CONSUME = "consume"  #: add a queue to those the worker claims from
    STOP_CONSUMING = "stop_consuming"  #: remove one


class WorkerOrder(msgspec.Struct, array_like=True, frozen=True):
    """One order: ``seq`` its number, ``queue`` empty for a shutdown, ``at`` when given."""

    seq: int
    action: OrderAction
    queue: str = ""
    at: float = 0.0


def validate(action: OrderAction, queue: str) -> None:
    """A shutdown names no queue; the other orders name one, as a worker's queue is named."""
    if action is OrderAction.SHUTDOWN:
        if queue:
            raise ValidationError(f"a shutdown order names no queue, got {queue!r}")
        return
    if not queue:
        raise ValidationError(f"a {action.value} order needs a queue")
    if len(queue) > MAX_QUEUE_LEN:
        raise ValidationError(f"queue name longer than {MAX_QUEUE_LEN} characters")


def effective_queues(rec: WorkerRecord) -> tuple[str, ...]:
    """The queues the worker will consume once it carried out its pending orders."""
    queues = list(rec.queues)
    for order in rec.orders:
        if order.action is OrderAction.CONSUME and order.queue not in queues:
            queues.append(order.queue)
        elif order.action is OrderAction.STOP_CONSUMING and order.queue in queues:
            queues.remove(order.queue)
    return tuple(queues)


def shutting_down(rec: WorkerRecord) -> bool:
    """Draining, or ordered to."""
    return rec.draining or any(o.action is OrderAction.SHUTDOWN for o in rec.orders)


def new_order(
    rec: WorkerRecord, action: OrderAction, queue: str, seq: int, now: float
) -> WorkerOrder | None:
    """The order to store, or None if it would change nothing; raises, changing nothing, if
    it cannot be carried out."""
    validate(action, queue)
    if shutting_down(rec):
        if action is OrderAction.SHUTDOWN:
            return None
        raise ConflictError(
            f"worker {rec.id} is shutting down: it consumes no queue any more",
            ErrorCode.INVALID_STATE,
        )
    queues = effective_queues(rec)
    if action is OrderAction.CONSUME and queue in queues:
        return None
    if action is OrderAction.STOP_CONSUMING:
        if queue not in queues:
            return None
        if queues == (queue,):
            raise ValidationError(
                f"queue {queue!r} is the only queue worker {rec.id} consumes: a worker needs "
                "one; order it to consume another first, or to shut down"
            )
    if len(rec.orders) >= MAX_PENDING_ORDERS:
        raise ConflictError(
            f"worker {rec.id} has {len(rec.orders)} orders it has not acknowledged yet (at "
            f"most {MAX_PENDING_ORDERS}): is it alive? try again once it heartbeats",
            ErrorCode.TOO_MANY_ORDERS,
        )
    return WorkerOrder(seq, action, queue, now)


def acknowledge(rec: WorkerRecord, acked: int) -> None:
    """The worker carried out every order numbered up to ``acked``."""
    if rec.orders and rec.orders[0].seq <= acked:
        rec.orders = tuple(o for o in rec.orders if o.seq > acked)


def started_of(started: tuple[TaskId, ...], held: dict[TaskId, None]) -> tuple[TaskId, ...]:
    """What a heartbeat says the worker runs, kept: tasks it holds, sorted, bounded."""
    return tuple(sorted(i for i in set(started) if i in held)[:MAX_STARTED])
