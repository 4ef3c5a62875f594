"""``tq schedules create|list|show|pause|resume|delete``: cron and interval schedules over the
TCP protocol. Times are shown as RFC 3339 (UTC) in every output format; ``list`` shows each
schedule's next firing time. The broker judges the cron expression and the time zone, and its
refusal names the field (``cron: ...``, ``timezone: ...``).
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from tq.cli.admin import table_time
from tq.cli.context import CliContext, connect, emit, parse_pairs, plain
from tq.cli.params import wire_type
from tq.cli.submit import read_payload
from tq.client.schedules import schedule_spec
from tq.protocol import ScheduleInfo, ScheduleSpec
from tq.protocol.records import DEFAULT_PRIORITY, DEFAULT_QUEUE


def schedule_data(s: ScheduleInfo) -> dict[str, Any]:
    return plain(s)


def _every(s: ScheduleInfo) -> str:
    if s.cron is not None:
        return s.cron if s.timezone == "UTC" else f"{s.cron} ({s.timezone})"
    return f"every {s.interval:g}s"


def _next_run(s: ScheduleInfo) -> str:
    if s.paused:
        return "paused"
    return "never" if s.next_at is None else table_time(s.next_at)


def _detail(s: ScheduleInfo) -> str:
    data = schedule_data(s)
    width = max(len(k) for k in data)
    return "\n".join(f"{k:<{width}}  {'' if v is None else v}" for k, v in data.items())


@click.group("schedules")
def schedules_group() -> None:
    """Cron and interval schedules: each firing submits one task."""


@schedules_group.command("create")
@click.argument("name")
@click.argument("task_type", metavar="TYPE", type=wire_type(ScheduleSpec, "task_type"))
@click.argument("payload", required=False, default="")
@click.option("--cron", help='Cron expression, e.g. "*/5 * * * *" or @hourly.')
@click.option("--interval", type=wire_type(ScheduleSpec, "interval"),
              help="Fire every S seconds (instead of --cron).")  # fmt: skip
@click.option("--timezone", "--tz", default="UTC", show_default=True,
              help="IANA time zone of the cron expression.")  # fmt: skip
@click.option("--queue", "-q", type=wire_type(ScheduleSpec, "queue"), default=DEFAULT_QUEUE,
              show_default=True)  # fmt: skip
@click.option("--priority", "-p", type=wire_type(ScheduleSpec, "priority"),
              default=DEFAULT_PRIORITY, show_default=True)  # fmt: skip
@click.option("--max-retries", type=wire_type(ScheduleSpec, "max_retries"),
              help="Default: broker setting.")  # fmt: skip
@click.option("--timeout", type=wire_type(ScheduleSpec, "timeout"), help="Execution timeout (s).")
@click.option("--expires-after", type=wire_type(ScheduleSpec, "expires_after"),
              help="Each task expires S seconds after its scheduled time.")  # fmt: skip
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--missed", type=click.Choice(["skip", "once", "all"]), default="skip",
              show_default=True, help="Firings missed while the broker was down.")  # fmt: skip
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--replace", is_flag=True, help="Replace a schedule of that name.")
@click.pass_obj
def create_cmd(
    ctx: CliContext,
    name: str,
    task_type: str,
    payload: str,
    cron: str | None,
    interval: float | None,
    timezone: str,
    queue: str,
    priority: int,
    max_retries: int | None,
    timeout: float | None,
    expires_after: float | None,
    tags: tuple[str, ...],
    missed: str,
    paused: bool,
    replace: bool,
) -> None:
    """Create schedule NAME submitting a task of TYPE with PAYLOAD (text, @file or - for
    stdin) at every --cron time or every --interval seconds."""
    spec = schedule_spec(
        name, task_type, read_payload(payload), cron=cron, interval=interval,
        timezone=timezone, queue=queue, priority=priority, max_retries=max_retries,
        timeout=timeout, tags=parse_pairs(tags, "--tag") or None, expires_after=expires_after,
        missed=missed, paused=paused,  # type: ignore[arg-type]
    )  # fmt: skip
    with connect(ctx) as client:
        made = client.create_schedule(spec, replace=replace)
    emit(ctx, schedule_data(made), f"schedule {made.name}: next run {_next_run(made)}")


@schedules_group.command("list")
@click.pass_obj
def list_cmd(ctx: CliContext) -> None:
    """Every schedule with its next run time."""
    with connect(ctx) as client:
        found = client.list_schedules()
    table = Table(title=f"Schedules ({len(found)})", title_justify="left")
    for column in ("name", "when", "task type", "queue", "next run (UTC)", "last run", "fired"):
        table.add_column(column)
    for s in found:
        table.add_row(
            Text(s.name), Text(_every(s)), Text(s.task_type), Text(s.queue),
            _next_run(s), table_time(s.last_fired_at),
            str(s.fired),
        )  # fmt: skip
    emit(ctx, [schedule_data(s) for s in found], table)


@schedules_group.command("show")
@click.argument("name")
@click.pass_obj
def show_cmd(ctx: CliContext, name: str) -> None:
    """One schedule in full."""
    with connect(ctx) as client:
        s = client.get_schedule(name)
    emit(ctx, schedule_data(s), _detail(s))


@schedules_group.command("pause")
@click.argument("name")
@click.pass_obj
def pause_cmd(ctx: CliContext, name: str) -> None:
    """Stop firing until resumed."""
    with connect(ctx) as client:
        s = client.pause_schedule(name)
    emit(ctx, schedule_data(s), f"paused {s.name}")


@schedules_group.command("resume")
@click.argument("name")
@click.pass_obj
def resume_cmd(ctx: CliContext, name: str) -> None:
    """Fire again from now (firings missed while paused are not made)."""
    with connect(ctx) as client:
        s = client.resume_schedule(name)
    emit(ctx, schedule_data(s), f"resumed {s.name}: next run {_next_run(s)}")


@schedules_group.command("delete")
@click.argument("name")
@click.pass_obj
def delete_cmd(ctx: CliContext, name: str) -> None:
    """Delete a schedule (the tasks it submitted stay)."""
    with connect(ctx) as client:
        s = client.delete_schedule(name)
    emit(ctx, schedule_data(s), f"deleted {s.name}")
