"""Read-and-manage commands: ``status``, ``list``, ``cancel``, ``stats``, ``queues`` (``workers``
lives in ``tq.cli.workers``). ``list`` shows why failed and dead-lettered tasks failed (an error
column, when one is listed).

Commands taking several ids carry on past an unknown one: each failure is an ``error:`` line
and the exit status is 2 once all are done. ``list --since/--until`` read times as REST does
(``tq.core.times``): RFC 3339, unix seconds, or an age ("10m": ten minutes ago, since "what
arrived in the last hour" is the usual question). Tables print times as RFC 3339 UTC.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import click
from rich import box
from rich.bar import Bar
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tq.cli.context import EXIT_ERROR, CliContext, connect, emit, error_line, fail, plain
from tq.cli.params import TASK_ID, TIME_HELP, InstantType, wire_bounds, wire_type
from tq.core.ids import format_task_id
from tq.core.model import TaskState
from tq.core.times import format_rfc3339
from tq.errors import TqError
from tq.protocol import ListTasks

if TYPE_CHECKING:
    from tq.client import Client
    from tq.protocol import TaskInfo

#: Most tasks one ``tq list`` gathers; it asks the broker page by page (a page holds at most
#: ``PAGE_MAX``), and prints the cursor to go on from.
LIST_MAX: Final = 10_000
PAGE_MAX: Final = int(wire_bounds(ListTasks, "limit")[1] or 1000)
#: Dead-lettered tasks ``tq queues`` counts per queue, at most (it lists them to count them).
DEAD_LETTER_COUNT_MAX: Final = 10_000


def _when() -> InstantType:
    return InstantType(*wire_bounds(ListTasks, "created_after"))


def table_time(seconds: float | None) -> str:
    """A time in a table cell: RFC 3339 UTC to the second (JSON and YAML keep milliseconds)."""
    return "" if seconds is None else format_rfc3339(seconds, "seconds")


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) == {"base64"}:
            return f"base64:{value['base64']}"
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _record_table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if value not in (None, [], {}, ""):
            table.add_row(key, Text(_cell(value)))  # Text: a payload "[b]" is not markup
    return table


@click.command("status")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...", type=TASK_ID)
@click.option("--payload", is_flag=True, help="Include each task's payload.")
@click.pass_obj
def status_cmd(ctx: CliContext, task_ids: tuple[str, ...], payload: bool) -> None:
    """Show everything known about tasks (a JSON/YAML list, one entry per ID)."""
    found: list[dict[str, Any]] = []
    failed = False
    with connect(ctx) as client:
        for task_id in task_ids:
            try:
                found.append(plain(client.status(task_id, include_payload=payload)))
            except TqError as exc:
                click.echo(error_line(exc), err=True)
                failed = True
    emit(ctx, found, Group(*(_record_table(f"task {t['id']}", t) for t in found)))
    if failed:
        click.get_current_context().exit(EXIT_ERROR)


@click.command("cancel")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...", type=TASK_ID)
@click.pass_obj
def cancel_cmd(ctx: CliContext, task_ids: tuple[str, ...]) -> None:
    """Cancel tasks that have not finished."""
    cancelled: list[str] = []
    with connect(ctx) as client:
        for task_id in task_ids:
            try:
                client.cancel(task_id)
                cancelled.append(task_id)
            except TqError as exc:
                click.echo(error_line(exc), err=True)
    emit(ctx, {"cancelled": cancelled}, "\n".join(f"cancelled {t}" for t in cancelled))
    if len(cancelled) < len(task_ids):
        click.get_current_context().exit(EXIT_ERROR)


def encode_cursor(cursor: bytes | None) -> str | None:
    return None if cursor is None else base64.urlsafe_b64encode(cursor).decode()


def decode_cursor(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        fail(f"--cursor {text!r} is not a cursor printed by tq list")


def gather(
    client: Client, limit: int, cursor: bytes | None, **filters: Any
) -> tuple[list[TaskInfo], bytes | None]:
    """Up to ``limit`` matching tasks, page by page (a page may hold fewer than asked: the
    broker bounds each call's scan and bytes), and the cursor after the last one."""
    tasks: list[TaskInfo] = []
    while len(tasks) < limit:
        page, cursor = client.list_tasks(
            limit=min(PAGE_MAX, limit - len(tasks)), cursor=cursor, **filters
        )
        tasks += page
        if cursor is None:
            break
    return tasks, cursor


def failure(t: TaskInfo) -> str:
    """Why a failed or dead-lettered task failed (``ValueError: bad input``), else ""."""
    if t.state not in (TaskState.FAILED, TaskState.DEAD_LETTER):
        return ""
    return ": ".join(part for part in (t.error_type, t.error) if part)


def first_line(text: str) -> str:
    """What a table cell shows of a text that may run over lines (a traceback)."""
    return text.splitlines()[0] if text else ""


@click.command("list")
@click.option("--state", type=click.Choice([s.value for s in TaskState]))
@click.option("--queue", "-q", type=wire_type(ListTasks, "queue"))
@click.option("--type", "task_type", type=wire_type(ListTasks, "task_type"),
              help="Only tasks of this type.")  # fmt: skip
@click.option("--priority-min", type=wire_type(ListTasks, "priority_min"))
@click.option("--priority-max", type=wire_type(ListTasks, "priority_max"))
@click.option("--since", type=_when(), help=f"Created at or after: {TIME_HELP}.")
@click.option("--until", type=_when(), help="Created before (same forms as --since).")
@click.option("--limit", type=click.IntRange(1, LIST_MAX), default=100, show_default=True)
@click.option("--cursor", help="Continue from the next_cursor of a previous list.")
@click.pass_obj
def list_cmd(
    ctx: CliContext,
    state: str | None,
    queue: str | None,
    task_type: str | None,
    priority_min: int | None,
    priority_max: int | None,
    since: float | None,
    until: float | None,
    limit: int,
    cursor: str | None,
) -> None:
    """List the tasks matching the filters, oldest first; page on with --cursor."""
    with connect(ctx) as client:
        tasks, next_cursor = gather(
            client,
            limit,
            decode_cursor(cursor),
            state=state,
            queue=queue,
            task_type=task_type,
            priority_min=priority_min,
            priority_max=priority_max,
            created_after=since,
            created_before=until,
        )
    rows = [plain(t) for t in tasks]
    # No side borders, and id, state and time never squeezed: type and queue wrap instead.
    table = Table(
        title=f"tasks ({len(rows)})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("state", no_wrap=True, min_width=11)
    table.add_column("type")
    table.add_column("queue")
    table.add_column("prio", justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    errors = [failure(t) for t in tasks]
    if any(errors):  # a column only when a listed task failed: the table stays narrow
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    for t, error in zip(tasks, errors, strict=True):
        cells: list[str | Text] = [
            format_task_id(t.id), t.state, Text(t.task_type), Text(t.queue), str(t.priority),
            table_time(t.created_at),
        ]  # fmt: skip
        table.add_row(*cells, *([Text(first_line(error))] if any(errors) else []))
    if next_cursor is not None:
        table.caption = f"more: --cursor {encode_cursor(next_cursor)}"
    emit(ctx, {"tasks": rows, "next_cursor": encode_cursor(next_cursor)}, table)


@click.command("stats")
@click.pass_obj
def stats_cmd(ctx: CliContext) -> None:
    """Broker-wide counts: tasks by state, workers, monotonic totals."""
    with connect(ctx) as client:
        data = plain(client.stats())
    table = Table(title=f"tq broker {data['node_id']}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for key in ("pending", "scheduled", "in_progress", "failed", "dead_letter", "workers"):
        table.add_row(key, f"{data[key]:,}")
    table.add_row("uptime", f"{data['uptime']:.0f} s")
    for key, value in data["totals"].items():
        table.add_row(f"total {key}", f"{value:,}")
    emit(ctx, data, table)


#: Per queue: pending by tier (high 200-255, normal 100-199, low 0-99), then the rest.
QUEUE_COLUMNS: Final = ("high", "normal", "low", "scheduled", "in_progress", "dead_letter")


def queue_table(queues: dict[str, dict[str, Any]], caption: str | None = None) -> Table:
    """One row per queue: its counts, and its pending tasks as a bar against the longest."""
    longest = max((sum(d[t] for t in QUEUE_COLUMNS[:3]) for d in queues.values()), default=0)
    table = Table(title=f"queues ({len(queues)})", title_justify="left", caption=caption)
    table.add_column("queue")
    for column in QUEUE_COLUMNS:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("pending")
    table.add_column("paused")
    for name, depth in queues.items():
        pending = sum(depth[t] for t in QUEUE_COLUMNS[:3])
        bar = Bar(size=max(longest, 1), begin=0, end=pending, width=30, color="cyan")
        paused = Text("paused", style="bold yellow") if depth.get("paused") else Text("")
        table.add_row(Text(name), *(f"{depth[c]:,}" for c in QUEUE_COLUMNS), bar, paused)
    return table


def _dead_letter_by_queue(client: Client) -> tuple[Counter[str], bool]:
    """Dead-lettered tasks per queue (the broker keeps no such count: they are listed), and
    whether there were more than ``DEAD_LETTER_COUNT_MAX`` to count."""
    tasks, cursor = gather(client, DEAD_LETTER_COUNT_MAX, None, state=TaskState.DEAD_LETTER)
    return Counter(t.queue for t in tasks), cursor is not None


@click.group("queues", invoke_without_command=True)
@click.pass_context
def queues_cmd(click_ctx: click.Context) -> None:
    """Every queue that a task or a worker names (empty ones too, paused ones too), its
    tasks by state and pending priority tier (high 200-255, normal 100-199, low 0-99), its
    dead letter and whether it is paused (tq queues pause|resume QUEUE change that)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: CliContext = click_ctx.obj
    with connect(ctx) as client:
        depths = client.stats().queues
        served = {q for w in client.workers() for q in w.queues}
        dead, more = _dead_letter_by_queue(client)
    data: dict[str, dict[str, Any]] = {}
    for name in sorted({*depths, *served, *dead}):
        depth = plain(depths[name]) if name in depths else dict.fromkeys(QUEUE_COLUMNS[:5], 0)
        data[name] = {
            **{c: depth.get(c, 0) for c in QUEUE_COLUMNS[:5]},
            "dead_letter": dead[name],
            "paused": bool(depth.get("paused")),
        }
    caption = None
    if more:
        caption = (
            f"dead letter: the first {DEAD_LETTER_COUNT_MAX:,} counted; "
            "tq list --state dead_letter pages through all"
        )
        if ctx.output != "table":  # JSON and YAML readers get no caption
            click.echo(f"warning: {caption}", err=True)
    emit(ctx, data, queue_table(data, caption))
