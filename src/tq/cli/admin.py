"""Read-and-manage commands: ``status``, ``list``, ``cancel``, ``stats``, ``workers``, ``queues``.

Commands taking several ids carry on past a bad one: each failure is an ``error:`` line and the
exit status is 2 once all are done. ``list --since/--until`` take ISO 8601, unix seconds, or an
age ("10m": ten minutes ago, since "what arrived in the last hour" is the usual question).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from datetime import datetime
from typing import Any

import click
from rich import box
from rich.bar import Bar
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tq.cli.context import EXIT_ERROR, CliContext, connect, emit, error_line, fail, plain
from tq.core.ids import format_task_id
from tq.core.model import TaskState
from tq.errors import TqError

# -- times of list --since/--until --------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_when(text: str, now: float) -> float:
    """Unix seconds of ``text``; raises ValueError naming the accepted forms."""
    if match := _RELATIVE.match(text):
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        # fromisoformat reads "Z" since 3.11; a naive value is local time, as a person means.
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2024-07-01T12:00Z), unix seconds, "
            "or an age such as 30s, 10m, 2h, 1d"
        ) from None


class WhenType(click.ParamType[float]):
    name = "TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_when(str(value), time.time())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WHEN = WhenType()


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
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
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
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
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


def _encode_cursor(cursor: bytes | None) -> str | None:
    return None if cursor is None else base64.urlsafe_b64encode(cursor).decode()


def _decode_cursor(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        fail(f"--cursor {text!r} is not a cursor printed by tq list")


@click.command("list")
@click.option("--state", type=click.Choice([s.value for s in TaskState]))
@click.option("--queue", "-q")
@click.option("--type", "task_type", help="Only tasks of this type.")
@click.option("--priority-min", type=click.IntRange(0, 255))
@click.option("--priority-max", type=click.IntRange(0, 255))
@click.option("--since", type=WHEN, help="Created after: ISO time, unix seconds, or 10m / 2h ago.")
@click.option("--until", type=WHEN, help="Created before (same forms as --since).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
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
        tasks, next_cursor = client.list_tasks(
            state=state,
            queue=queue,
            task_type=task_type,
            priority_min=priority_min,
            priority_max=priority_max,
            created_after=since,
            created_before=until,
            limit=limit,
            cursor=_decode_cursor(cursor),
        )
    rows = [plain(t) for t in tasks]
    # Fits 80 columns with short names: no side borders, and id and state never squeezed.
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
    table.add_column("created", no_wrap=True)
    today = time.strftime("%Y-%m-%d")
    for t in tasks:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.created_at))
        table.add_row(
            format_task_id(t.id),
            t.state,
            Text(t.task_type),
            Text(t.queue),
            str(t.priority),
            created.removeprefix(f"{today} "),  # the time alone for today's tasks
        )
    if next_cursor is not None:
        table.caption = f"more: --cursor {_encode_cursor(next_cursor)}"
    emit(ctx, {"tasks": rows, "next_cursor": _encode_cursor(next_cursor)}, table)


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


@click.command("workers")
@click.pass_obj
def workers_cmd(ctx: CliContext) -> None:
    """Registered workers, their load and liveness."""
    with connect(ctx) as client:
        workers = client.workers()
    now = time.time()
    table = Table(title=f"workers ({len(workers)})", title_justify="left")
    for column in ("worker", "queues", "running", "host", "cpu %", "rss MiB", "heartbeat", "alive"):
        table.add_column(column)
    for w in workers:
        table.add_row(
            Text(w.name or w.id),
            Text(",".join(w.queues)),
            f"{w.running}/{w.concurrency}",
            f"{w.hostname}:{w.pid}",
            f"{w.cpu_percent:.0f}",
            f"{w.memory_rss / 2**20:.0f}",
            f"{max(0.0, now - w.last_heartbeat):.1f} s ago",
            "yes" if w.alive else "[red]no[/red]",
        )
    emit(ctx, [plain(w) for w in workers], table)


_TIERS = ("high", "normal", "low", "scheduled", "in_progress")


@click.command("queues")
@click.pass_obj
def queues_cmd(ctx: CliContext) -> None:
    """Queue depth per priority tier (high 200-255, normal 100-199, low 0-99), as bars."""
    with connect(ctx) as client:
        queues = client.stats().queues
    data = {name: plain(depth) for name, depth in sorted(queues.items())}
    longest = max((d[t] for d in data.values() for t in _TIERS), default=0)
    table = Table(title=f"queues ({len(data)})", title_justify="left")
    for column in ("queue", "tier", "tasks", "depth"):
        table.add_column(column, justify="right" if column == "tasks" else "left")
    for name, depth in data.items():
        for i, tier in enumerate(_TIERS):
            bar = Bar(size=max(longest, 1), begin=0, end=depth[tier], width=40, color="cyan")
            table.add_row(Text(name if i == 0 else ""), tier, f"{depth[tier]:,}", bar)
        table.add_section()
    emit(ctx, data, table)
