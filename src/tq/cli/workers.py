"""``tq workers`` (the list), ``tq workers inspect ID`` and the orders ``shutdown ID``,
``consume ID QUEUE``, ``stop-consuming ID QUEUE`` (an admin key): cluster-wide worker control.

An order returns once the broker stored it; the worker carries it out within about a second
(at its next heartbeat if it is connected to another node). ``--wait`` waits until it has:
the order acknowledged, or the worker gone for a shutdown.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tq.cli.admin import table_time
from tq.cli.context import CliContext, connect, emit, fail, iso, plain
from tq.errors import ErrorCode, NotFoundError
from tq.protocol import WorkerInfo, WorkerOrderInfo

if TYPE_CHECKING:
    from tq.client import Client

#: How long ``--wait`` waits for the worker to carry an order out, by default.
WAIT_DEFAULT: Final = 30.0


def state_of(w: WorkerInfo) -> str:
    """What the worker does: consuming, draining (shutting down), or dead (silent)."""
    if not w.alive:
        return "dead"
    return "draining" if w.draining else "consuming"


def worker_data(w: WorkerInfo) -> dict[str, Any]:
    return {**plain(w), "state": state_of(w)}


def order_data(o: WorkerOrderInfo) -> dict[str, Any]:
    return {**plain(o), "at": iso(o.at)}


@click.group("workers", invoke_without_command=True)
@click.pass_context
def workers_group(click_ctx: click.Context) -> None:
    """Registered workers: what each runs and reserved, its queues and state. The
    subcommands inspect one worker and give it orders (an admin key)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: CliContext = click_ctx.obj
    with connect(ctx) as client:
        workers = client.workers()
    now = time.time()
    table = Table(title=f"workers ({len(workers)})", title_justify="left")
    for column in ("worker", "queues", "state", "running", "reserved", "host", "cpu %",
                   "rss MiB", "registered (UTC)", "heartbeat"):  # fmt: skip
        table.add_column(column, no_wrap=column.startswith("registered"))
    for w in workers:
        state = state_of(w)
        table.add_row(
            Text(w.name or w.id),
            Text(",".join(w.queues)),
            f"[red]{state}[/red]" if state == "dead" else state,
            f"{w.running}/{w.concurrency}",
            str(w.reserved),
            f"{w.hostname}:{w.pid}",
            f"{w.cpu_percent:.0f}",
            f"{w.memory_rss / 2**20:.0f}",
            table_time(w.registered_at),
            f"{max(0.0, now - w.last_heartbeat):.1f} s ago",
        )
    emit(ctx, [worker_data(w) for w in workers], table)


@workers_group.command("inspect")
@click.argument("worker_id", metavar="ID")
@click.pass_obj
def inspect_cmd(ctx: CliContext, worker_id: str) -> None:
    """One worker: the ids of the tasks it runs and of those it reserved (claimed, not
    started; as of its last heartbeat), its queues, state and orders not carried out yet."""
    with connect(ctx) as client:
        found = client.inspect_worker(worker_id)
    w = found.worker
    data = {
        **worker_data(w),
        "running_ids": found.running,
        "reserved_ids": found.reserved,
        "pending_orders": [order_data(o) for o in found.orders],
    }
    head = Table(title=f"worker {w.id}", title_justify="left", show_header=False)
    head.add_column("what", style="bold")
    head.add_column("value")
    head.add_row("queues", Text(",".join(w.queues)))
    head.add_row("state", state_of(w))
    head.add_row("running", f"{w.running}/{w.concurrency}")
    head.add_row("reserved", str(w.reserved))
    head.add_row("host", f"{w.hostname}:{w.pid}")
    head.add_row("heartbeat", table_time(w.last_heartbeat))
    tasks = Table(title="tasks", title_justify="left")
    tasks.add_column("task")
    tasks.add_column("as")
    for task_id in found.running:
        tasks.add_row(task_id, "running")
    for task_id in found.reserved:
        tasks.add_row(task_id, "reserved")
    shown: list[Table] = [head, tasks]
    if found.orders:
        orders = Table(title="orders not carried out yet", title_justify="left")
        for column in ("seq", "action", "queue", "given (UTC)"):
            orders.add_column(column)
        for o in found.orders:
            orders.add_row(str(o.seq), o.action, Text(o.queue), table_time(o.at))
        shown.append(orders)
    emit(ctx, data, Group(*shown))


_WAIT = click.option(
    "--wait",
    "wait",
    is_flag=True,
    help="Return once the worker carried the order out (or is gone, for a shutdown).",
)
_TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=WAIT_DEFAULT,
    show_default=True,
    help="Seconds --wait waits at most.",
)


@workers_group.command("shutdown")
@click.argument("worker_id", metavar="ID")
@_WAIT
@_TIMEOUT
@click.pass_obj
def shutdown_cmd(ctx: CliContext, worker_id: str, wait: bool, timeout: float) -> None:
    """Ask a worker to stop gracefully, as SIGTERM does: it claims no more, hands back what
    it reserved, finishes what it runs (up to its --shutdown-timeout) and exits."""
    with connect(ctx, reconnect=wait) as client:
        order = client.shutdown_worker(worker_id)
        if wait:
            _wait_gone(client, worker_id, timeout)
    _report(ctx, worker_id, "shutdown", "", order, wait)


@workers_group.command("consume")
@click.argument("worker_id", metavar="ID")
@click.argument("queue")
@_WAIT
@_TIMEOUT
@click.pass_obj
def consume_cmd(ctx: CliContext, worker_id: str, queue: str, wait: bool, timeout: float) -> None:
    """Ask a worker to claim tasks of QUEUE too."""
    with connect(ctx, reconnect=wait) as client:
        order = client.consume(worker_id, queue)
        if wait:
            _wait_queue(client, worker_id, queue, True, timeout)
    _report(ctx, worker_id, "consume", queue, order, wait)


@workers_group.command("stop-consuming")
@click.argument("worker_id", metavar="ID")
@click.argument("queue")
@_WAIT
@_TIMEOUT
@click.pass_obj
def stop_consuming_cmd(
    ctx: CliContext, worker_id: str, queue: str, wait: bool, timeout: float
) -> None:
    """Ask a worker to claim no more tasks of QUEUE (those it holds still run). Refused for
    the worker's only queue."""
    with connect(ctx, reconnect=wait) as client:
        order = client.stop_consuming(worker_id, queue)
        if wait:
            _wait_queue(client, worker_id, queue, False, timeout)
    _report(ctx, worker_id, "stop_consuming", queue, order, wait)


def _report(
    ctx: CliContext,
    worker_id: str,
    action: str,
    queue: str,
    order: WorkerOrderInfo | None,
    waited: bool,
) -> None:
    what = f"{action.replace('_', '-')} {queue}".strip()
    if order is None:
        text = f"worker {worker_id}: {what}: nothing to do (already so, or already ordered)"
    elif waited:
        text = f"worker {worker_id}: {what}: done (order {order.seq})"
    else:
        text = f"worker {worker_id}: {what}: ordered (order {order.seq})"
    data = {
        "worker_id": worker_id,
        "action": action,
        "queue": queue,
        "order": None if order is None else order_data(order),
        "carried_out": waited,
    }
    emit(ctx, data, text)


def _poll(what: str, timeout: float, done: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)  # polling the broker's view of the worker, with a deadline


def _wait_gone(client: Client, worker_id: str, timeout: float) -> None:
    def gone() -> bool:
        try:
            client.inspect_worker(worker_id)
        except NotFoundError as e:
            return e.code == ErrorCode.WORKER_NOT_FOUND
        return False

    _poll(f"worker {worker_id} to shut down", timeout, gone)


def _wait_queue(client: Client, worker_id: str, queue: str, wanted: bool, timeout: float) -> None:
    def carried_out() -> bool:
        w = client.inspect_worker(worker_id)
        return (queue in w.worker.queues) is wanted and not w.orders

    _poll(f"worker {worker_id} to carry the order out", timeout, carried_out)
