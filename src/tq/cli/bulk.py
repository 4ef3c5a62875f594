"""Dead-letter and bulk commands: ``retry``, ``delete``, ``purge`` and ``dead-letters``.

``retry`` and ``delete`` take ids, as ``cancel`` does: each failure is an ``error:`` line in
the broker's words and the exit status is 2 once all are done. ``retry`` also takes filters
(the dead-lettered tasks they select, paged through the broker: no bound on how many).
``purge`` counts what it would delete first, asks ("delete N tasks (...)? [y/N]") unless
``--yes``, and refuses to run unasked without a terminal to ask on; it deletes exactly the
tasks it counted. An operation of more than one call shows a progress bar on stderr (its
last state only, when stderr is not a terminal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tq.cli.admin import (
    LIST_MAX,
    PAGE_MAX,
    decode_cursor,
    encode_cursor,
    first_line,
    gather,
    table_time,
)
from tq.cli.context import EXIT_ERROR, CliContext, connect, emit, error_line, fail, plain
from tq.cli.params import TASK_ID, TIME_HELP, InstantType, wire_bounds, wire_type
from tq.core.ids import format_task_id
from tq.core.model import TaskState
from tq.protocol import ActOnFilter

if TYPE_CHECKING:
    from tq.client import ActionResult, BulkProgress, Client, TaskFilter

#: Tasks per call of a bulk command: a progress step (a call may take at most 10,000).
PAGE: Final = 1000
#: Per-task failures a bulk command prints before summing up the rest.
SHOWN_FAILURES: Final = 20
#: What ``purge`` may delete: finished tasks.
FINISHED: Final = (TaskState.COMPLETED, TaskState.DEAD_LETTER, TaskState.CANCELLED)


def n_tasks(n: int) -> str:
    """``1 task``, ``10,500 tasks``."""
    return f"{n:,} task" if n == 1 else f"{n:,} tasks"


def _when() -> InstantType:
    return InstantType(*wire_bounds(ActOnFilter, "created_after"))


_TYPE_HELP = "Only tasks of this type."
_UNTIL_HELP = "Created before (same forms as --since)."


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filter options shared by ``retry`` and ``purge`` (``--state`` is each one's)."""
    options = (
        click.option("--queue", "-q", type=wire_type(ActOnFilter, "queue")),
        click.option("--type", "task_type", type=wire_type(ActOnFilter, "task_type"),
                     help=_TYPE_HELP),
        click.option("--priority-min", type=wire_type(ActOnFilter, "priority_min")),
        click.option("--priority-max", type=wire_type(ActOnFilter, "priority_max")),
        click.option("--since", type=_when(), help=f"Created at or after: {TIME_HELP}."),
        click.option("--until", type=_when(), help=_UNTIL_HELP),
    )  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class FilterArgs:
    """The filter options as typed (None: not given)."""

    queue: str | None
    task_type: str | None
    priority_min: int | None
    priority_max: int | None
    since: float | None
    until: float | None


def _filter(state: str | None, args: FilterArgs) -> TaskFilter | None:
    """The filter the options make; None when no option was given."""
    from tq.client import TaskFilter  # noqa: PLC0415 - see tq.cli.context.connect

    where = TaskFilter(
        state=state, queue=args.queue, task_type=args.task_type,
        priority_min=args.priority_min, priority_max=args.priority_max,
        created_after=args.since, created_before=args.until,
    )  # fmt: skip
    return None if where == TaskFilter() else where


@contextmanager
def progress_bar(
    verb: str, past: str, total: int | None = None
) -> Iterator[Callable[[BulkProgress], None]]:
    """A progress callback that shows a bar on stderr once an operation takes a second call
    (a single call is over before a bar could say anything)."""
    shown: list[tuple[Progress, TaskID]] = []

    def update(p: BulkProgress) -> None:
        done = p.applied + p.failed
        if not shown:
            if p.done:
                return
            bar = Progress(
                TextColumn(verb), BarColumn(), TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(), console=Console(stderr=True),
            )  # fmt: skip
            shown.append((bar, bar.add_task(verb, total=total, counts="")))
            bar.start()
        bar, task = shown[0]
        counts = f"{done:,}/{total:,} tasks" if total is not None else f"{done:,} tasks"
        if p.failed:
            counts += f" ({p.failed:,} not {past})"
        bar.update(task, completed=done, counts=counts)

    try:
        yield update
    finally:
        if shown:
            shown[0][0].stop()


def _report_failures(failed: list[ActionResult], limit: int | None = None) -> None:
    for r in failed[:limit]:
        error = r.error
        assert error is not None
        click.echo(error_line(error), err=True)
    if limit is not None and len(failed) > limit:
        click.echo(f"error: ... and {len(failed) - limit:,} more tasks not done", err=True)


def _by_ids(ctx: CliContext, verb: str, past: str, task_ids: tuple[str, ...]) -> None:
    """``verb`` each id: the ids it applied to on stdout, each failure on stderr."""
    with connect(ctx) as client:
        act = client.retry_many if verb == "retry" else client.delete_many
        with progress_bar(verb, past, len(set(task_ids))) as progress:
            results = act(list(task_ids), page_size=PAGE, progress=progress)
    done = [r.task_id for r in results if r.ok]
    _report_failures([r for r in results if not r.ok])
    emit(ctx, {past: done}, "\n".join(f"{past} {t}" for t in done))
    if len(done) < len(results):
        click.get_current_context().exit(EXIT_ERROR)


@click.command("retry")
@click.argument("task_ids", nargs=-1, metavar="[ID]...", type=TASK_ID)
@click.option("--state", type=click.Choice([TaskState.DEAD_LETTER.value]),
              help="Retry by filter: the dead-lettered tasks the options select (the default "
                   "when a filter is given: only those can be retried).")  # fmt: skip
@filter_options
@click.pass_obj
def retry_cmd(
    ctx: CliContext,
    task_ids: tuple[str, ...],
    state: str | None,
    queue: str | None,
    task_type: str | None,
    priority_min: int | None,
    priority_max: int | None,
    since: float | None,
    until: float | None,
) -> None:
    """Requeue dead-lettered tasks: by ID, or every one a filter selects."""
    args = FilterArgs(queue, task_type, priority_min, priority_max, since, until)
    where = _filter(state, args)
    if task_ids and where is not None:
        fail("give task IDs or filter options (--state, --queue, ...), not both")
    if where is None:
        if not task_ids:
            fail("give task IDs, or --state dead_letter and/or filter options to retry by")
        _by_ids(ctx, "retry", "retried", task_ids)
        return
    where = _with_state(where, TaskState.DEAD_LETTER)
    with connect(ctx) as client, progress_bar("retry", "retried") as progress:
        outcome = client.retry_where(where, page_size=PAGE, progress=progress)
    _report_failures(outcome.failed, SHOWN_FAILURES)
    applied, failed = len(outcome.applied), len(outcome.failed)
    emit(
        ctx,
        {"retried": applied, "failed": failed},
        f"retried {n_tasks(applied)} ({where.describe()})",
    )
    if failed:
        click.get_current_context().exit(EXIT_ERROR)


def _with_state(where: TaskFilter, state: TaskState) -> TaskFilter:
    return replace(where, state=state.value)


@click.command("delete")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...", type=TASK_ID)
@click.pass_obj
def delete_cmd(ctx: CliContext, task_ids: tuple[str, ...]) -> None:
    """Delete finished tasks (completed, dead_letter, cancelled) for good."""
    _by_ids(ctx, "delete", "deleted", task_ids)


def _finished(client: Client, where: TaskFilter, states: tuple[str, ...]) -> list[str]:
    """The ids of the finished tasks ``where`` selects, in ``states`` (all finished ones if
    none), in id order."""
    wanted = states or tuple(s.value for s in FINISHED)
    ids: list[bytes] = []
    for state in wanted:
        cursor: bytes | None = None
        while True:
            page, cursor = client.list_tasks(
                **_listing(replace(where, state=state)), limit=PAGE_MAX, cursor=cursor
            )
            ids += [t.id for t in page]
            if cursor is None:
                break
    return [format_task_id(i) for i in sorted(ids)]


def _scope(where: TaskFilter, states: tuple[str, ...]) -> str:
    """``queue=q, state=completed|cancelled``: what a purge selects, in its prompt."""
    others = replace(where, state=None).describe()
    state = f"state={'|'.join(states)}" if states else "every finished state"
    return ", ".join(filter(None, [others, state]))


def _listing(where: TaskFilter) -> dict[str, Any]:
    return {
        "state": where.state, "queue": where.queue, "task_type": where.task_type,
        "priority_min": where.priority_min, "priority_max": where.priority_max,
        "created_after": where.created_after, "created_before": where.created_before,
    }  # fmt: skip


@click.command("purge")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in FINISHED]),
              help="Only tasks in this state (repeatable; default: all finished).")  # fmt: skip
@filter_options
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@click.pass_obj
def purge_cmd(
    ctx: CliContext,
    states: tuple[str, ...],
    queue: str | None,
    task_type: str | None,
    priority_min: int | None,
    priority_max: int | None,
    since: float | None,
    until: float | None,
    yes: bool,
) -> None:
    """Delete the finished tasks a filter selects, after counting them and asking."""
    args = FilterArgs(queue, task_type, priority_min, priority_max, since, until)
    where = _filter(states[0] if states else None, args)
    if where is None:
        fail("purge needs --queue, --state or another filter: it never deletes every task")
    what = _scope(where, states)
    with connect(ctx) as client:
        ids = _finished(client, where, states)
        if not ids:
            emit(
                ctx, {"matched": 0, "deleted": 0, "failed": 0}, f"no finished tasks match ({what})"
            )
            return
        if not yes:
            if not sys.stdin.isatty():
                fail(
                    f"refusing to delete {n_tasks(len(ids))} ({what}) unasked: stdin is not a "
                    "terminal to confirm on; pass --yes"
                )
            click.confirm(f"delete {n_tasks(len(ids))} ({what})?", abort=True, err=True)
        with progress_bar("delete", "deleted", len(ids)) as progress:
            results = client.delete_many(ids, page_size=PAGE, progress=progress)
    failed = [r for r in results if not r.ok]
    _report_failures(failed, SHOWN_FAILURES)
    deleted = len(results) - len(failed)
    data = {"matched": len(ids), "deleted": deleted, "failed": len(failed)}
    emit(ctx, data, f"deleted {n_tasks(deleted)} ({what})")
    if failed:
        click.get_current_context().exit(EXIT_ERROR)


@click.command("dead-letters")
@click.option("--queue", "-q", type=wire_type(ActOnFilter, "queue"))
@click.option("--type", "task_type", type=wire_type(ActOnFilter, "task_type"),
              help="Only tasks of this type.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, LIST_MAX), default=100, show_default=True)
@click.option("--cursor", help="Continue from the next_cursor of a previous listing.")
@click.pass_obj
def dead_letters_cmd(
    ctx: CliContext, queue: str | None, task_type: str | None, limit: int, cursor: str | None
) -> None:
    """Dead-lettered tasks with why they failed, oldest first (retry them with tq retry)."""
    with connect(ctx) as client:
        dead, next_cursor = gather(
            client, limit, decode_cursor(cursor), state=TaskState.DEAD_LETTER.value,
            queue=queue, task_type=task_type,
        )  # fmt: skip
    table = Table(title=f"dead letters ({len(dead)})", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("type")
    table.add_column("queue")
    table.add_column("tries", justify="right")
    table.add_column("failed (UTC)", no_wrap=True)
    table.add_column("error", overflow="fold")
    for t in dead:
        error = ": ".join(part for part in (t.error_type, t.error) if part)
        table.add_row(
            format_task_id(t.id), Text(t.task_type), Text(t.queue), str(t.attempts),
            table_time(t.completed_at or t.updated_at), Text(first_line(error)),
        )  # fmt: skip
    if next_cursor is not None:
        table.caption = f"more: --cursor {encode_cursor(next_cursor)}"
    emit(ctx, {"tasks": [plain(t) for t in dead], "next_cursor": encode_cursor(next_cursor)}, table)
