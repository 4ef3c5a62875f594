"""Flow control from the command line: ``tq queues pause|resume QUEUE`` and ``tq limits
set|list|clear`` (rate limits per task type, concurrency caps per queue or task type), over
the TCP protocol with an admin key (a read key to list). See docs/flow-control.md.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from tq.cli.admin import queues_cmd, table_time
from tq.cli.context import CliContext, connect, emit, plain
from tq.protocol import LimitInfo, QueueState


def _state_line(state: QueueState) -> str:
    if state.paused:
        return f"queue {state.queue} paused since {table_time(state.paused_at)} UTC"
    return f"queue {state.queue} is running (not paused)"


@queues_cmd.command("pause")
@click.argument("queue")
@click.pass_obj
def pause_cmd(ctx: CliContext, queue: str) -> None:
    """Pause QUEUE: it takes submits, and workers get none of its tasks until it is resumed
    (tasks already running go on)."""
    with connect(ctx) as client:
        state = client.pause_queue(queue)
    emit(ctx, plain(state), _state_line(state))


@queues_cmd.command("resume")
@click.argument("queue")
@click.pass_obj
def resume_cmd(ctx: CliContext, queue: str) -> None:
    """Resume QUEUE: its tasks are handed out again."""
    with connect(ctx) as client:
        state = client.resume_queue(queue)
    emit(ctx, plain(state), _state_line(state))


@click.group("limits")
def limits_group() -> None:
    """Rate limits (per task type) and concurrency caps (per queue or task type), enforced by
    the broker when workers claim tasks. Needs an admin key (a read key to list)."""


def _target(queue: str | None, task_type: str | None) -> dict[str, str | None]:
    if (queue is None) == (task_type is None):
        raise click.UsageError("give exactly one of --queue and --type")
    return {"queue": queue, "task_type": task_type}


_QUEUE = click.option("--queue", help="The queue the limit applies to (a cap only).")
_TYPE = click.option("--type", "task_type", help="The task type the limit applies to.")


@limits_group.command("set")
@_QUEUE
@_TYPE
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="Tasks per second (types only)."
)
@click.option(
    "--burst", type=click.IntRange(min=1), help="Tasks at once after a quiet spell (default: rate)."
)
@click.option("--concurrency", type=click.IntRange(min=1), help="Most tasks in progress at once.")
@click.pass_obj
def set_cmd(
    ctx: CliContext,
    queue: str | None,
    task_type: str | None,
    rate: float | None,
    burst: int | None,
    concurrency: int | None,
) -> None:
    """Set the limit of one queue or task type, replacing the one it had (e.g. --type email
    --rate 10 --burst 20, or --queue reports --concurrency 5)."""
    target = _target(queue, task_type)
    if rate is None and concurrency is None:
        raise click.UsageError("give --rate, --concurrency, or both")
    with connect(ctx) as client:
        info = client.set_limit(**target, rate=rate, burst=burst, concurrency=concurrency)
    emit(ctx, plain(info), f"{info.scope} {info.name}: {_describe(info)}")


@limits_group.command("list")
@click.pass_obj
def list_cmd(ctx: CliContext) -> None:
    """Every limit, with its tasks in progress and the tokens its bucket holds now."""
    with connect(ctx) as client:
        limits = client.limits()
    table = Table(title=f"limits ({len(limits)})", title_justify="left")
    for column in ("scope", "name", "rate /s", "burst", "tokens", "concurrency", "running", "set"):
        table.add_column(column, justify="right" if column not in ("scope", "name") else "left")
    for x in limits:
        table.add_row(
            x.scope, Text(x.name), _num(x.rate), _num(x.burst), _num(x.tokens),
            _num(x.concurrency), f"{x.running:,}", table_time(x.set_at),
        )  # fmt: skip
    emit(ctx, [plain(x) for x in limits], table)


@limits_group.command("clear")
@_QUEUE
@_TYPE
@click.pass_obj
def clear_cmd(ctx: CliContext, queue: str | None, task_type: str | None) -> None:
    """Remove the limit of one queue or task type (its tasks are handed out freely again)."""
    target = _target(queue, task_type)
    with connect(ctx) as client:
        client.clear_limit(**target)
    name = queue if queue is not None else task_type
    scope = "queue" if queue is not None else "type"
    emit(ctx, {"scope": scope, "name": name, "cleared": True}, f"{scope} {name}: limit cleared")


def _num(value: Any) -> str:
    return "" if value is None else f"{value:g}"


def _describe(info: LimitInfo) -> str:
    parts = []
    if info.rate is not None:
        parts.append(f"at most {info.rate:g} tasks/s, {info.burst} at once")
    if info.concurrency is not None:
        parts.append(f"at most {info.concurrency} in progress")
    return "; ".join(parts)
