"""``tq submit``: one task, or ``--count`` copies in batches behind a progress bar, and with
``--wait`` the result the broker pushes back (a task that did not complete exits with 1);
the wait rides out broker outages until ``--timeout-wait`` (none by default).

PAYLOAD is text sent as UTF-8 bytes (JSON, usually), ``@file`` for a file's bytes, or ``-``
for stdin. Options are checked against the wire bounds before anything is sent; what only the
broker can judge (the payload limit, tags) comes back naming ``tasks[0].payload``, which is
said here in the command's own terms (``PAYLOAD``, ``--tag``).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tq.cli.context import CliContext, cell_bytes, connect, emit, err_console, fail, parse_pairs
from tq.cli.context import plain as plain_record
from tq.cli.keys import parse_expiry
from tq.cli.params import TASK_ID, wire_type
from tq.core.ids import format_task_id
from tq.errors import ErrorCode, ProtocolError, TaskFailedError, ValidationError
from tq.protocol import TaskSpec
from tq.protocol.records import DEFAULT_PRIORITY, DEFAULT_QUEUE

if TYPE_CHECKING:
    from tq.client import Client
    from tq.protocol.records import TaskInfo

#: Tasks per submit_many call: large enough to amortise round trips, far below a frame's size.
BATCH = 500

#: The argument or option of ``tq submit`` that sets each field of a task spec.
SPEC_OPTIONS: Final = {
    "task_type": "TYPE",
    "payload": "PAYLOAD",
    "queue": "--queue",
    "priority": "--priority",
    "delay": "--delay",
    "max_retries": "--max-retries",
    "timeout": "--timeout",
    "depends_on": "--depends-on",
    "tags": "--tag",
    "idempotency_key": "--idempotency-key",
    "expires_at": "--expires",
    "result_ttl": "--result-ttl",
    "failure_ttl": "--failure-ttl",
    "aging": "--no-aging",
}
#: A task spec's path in a broker's message: ``tasks[3].payload``, ``$.tasks[0].tags``.
_SPEC_PATH = re.compile(r"`?\$?\.?tasks\[\d+\](?:\.(\w+))?`?")
_LIMIT = re.compile(r"limit of (\d+)")


def in_cli_terms(exc: ValidationError | ProtocolError, payload_size: int) -> ValidationError:
    """A refusal of the submitted task, naming the argument or option behind the field."""

    def name(match: re.Match[str]) -> str:
        field = match[1]
        return SPEC_OPTIONS.get(field, field) if field else "the task"

    # Refused by the client before sending: the task's frame would be above the limit.
    if exc.code == ErrorCode.FRAME_TOO_LARGE or "frame limit" in exc.message:
        limit = _LIMIT.search(exc.message)
        frame = f" of {int(limit[1]):,} bytes" if limit else ""
        return ValidationError(
            f"PAYLOAD of {payload_size:,} bytes makes the task larger than the broker's frame "
            f"limit{frame} (broker.max_frame_size_bytes; payloads are held to "
            "broker.max_payload_size_bytes)",
            ErrorCode.PAYLOAD_TOO_LARGE,
        )
    return ValidationError(_SPEC_PATH.sub(name, exc.message), exc.code)


def read_payload(text: str) -> bytes:
    """The PAYLOAD argument: ``-`` reads stdin, ``@path`` a file, anything else is UTF-8 text."""
    if text == "-":
        return sys.stdin.buffer.read()
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            fail(f"cannot read payload file {str(path)!r}: {exc.strerror or exc}")
    return text.encode()


def _progress(description: str) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        # Progress goes to stderr so stdout stays parseable; off when nobody watches.
        disable=not err_console.is_terminal,
    )


def _outcome_error(info: TaskInfo) -> TaskFailedError:
    code = ErrorCode.TASK_CANCELLED if info.state == "cancelled" else ErrorCode.TASK_FAILED
    remote = f"{info.error_type}: {info.error}" if info.error_type else info.error
    why = f": {remote}" if remote else ""
    return TaskFailedError(
        f"task {format_task_id(info.id)} ended {info.state}{why}",
        code,
        task_id=format_task_id(info.id),
        remote_type=info.error_type,
    )


@click.command("submit")
@click.argument("task_type", metavar="TYPE", type=wire_type(TaskSpec, "task_type"))
@click.argument("payload", required=False, default="")
@click.option("--queue", "-q", type=wire_type(TaskSpec, "queue"), default=DEFAULT_QUEUE,
              show_default=True)  # fmt: skip
@click.option("--priority", "-p", type=wire_type(TaskSpec, "priority"),
              default=DEFAULT_PRIORITY, show_default=True)  # fmt: skip
@click.option("--delay", type=wire_type(TaskSpec, "delay"),
              help="Seconds before the task may run.")  # fmt: skip
@click.option("--max-retries", type=wire_type(TaskSpec, "max_retries"),
              help="Default: broker setting.")  # fmt: skip
@click.option("--timeout", type=wire_type(TaskSpec, "timeout"), help="Execution timeout (s).")
@click.option("--depends-on", multiple=True, metavar="ID", type=TASK_ID,
              help="Run only after task ID.")  # fmt: skip
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--idempotency-key", type=wire_type(TaskSpec, "idempotency_key"),
              help="A repeated submit with this key returns the same id.")  # fmt: skip
@click.option("--expires", metavar="WHEN",
              help="Cancel the task if it has not started by then: a duration (90m, 12h) or "
              "an RFC 3339 time.")  # fmt: skip
@click.option("--result-ttl", type=wire_type(TaskSpec, "result_ttl"),
              help="Seconds the task and its result are kept once completed.")  # fmt: skip
@click.option("--failure-ttl", type=wire_type(TaskSpec, "failure_ttl"),
              help="Seconds the task is kept once dead-lettered.")  # fmt: skip
@click.option("--aging/--no-aging", default=True, show_default=True,
              help="--no-aging: keep the priority however long the task waits.")  # fmt: skip
@click.option("--count", type=click.IntRange(min=1), default=1, help="Submit N copies.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout-wait", type=click.FloatRange(min=0), help="Stop waiting after S s.")
@click.pass_obj
def submit_cmd(
    ctx: CliContext,
    task_type: str,
    payload: str,
    queue: str,
    priority: int,
    delay: float | None,
    max_retries: int | None,
    timeout: float | None,
    depends_on: tuple[str, ...],
    tags: tuple[str, ...],
    idempotency_key: str | None,
    expires: str | None,
    result_ttl: float | None,
    failure_ttl: float | None,
    aging: bool,
    count: int,
    wait: bool,
    timeout_wait: float | None,
) -> None:
    """Submit a task of TYPE with PAYLOAD (text, @file or - for stdin)."""
    if count > 1 and idempotency_key is not None:
        raise click.BadParameter("copies with one key would be one task", param_hint="--count")
    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "delay": delay,
        "max_retries": max_retries,
        "timeout": timeout,
        "depends_on": depends_on,  # checked by TASK_ID before anything is sent
        "tags": parse_pairs(tags, "--tag") or None,
        "idempotency_key": idempotency_key,
        "expires_at": None if expires is None else parse_expiry(expires, time.time()),
        "result_ttl": result_ttl,
        "failure_ttl": failure_ttl,
        "aging": aging,
    }
    data = read_payload(payload)
    # A wait outlives broker restarts (until --timeout-wait, if given); a plain submit
    # gets one connection attempt.
    with connect(ctx, reconnect=wait) as client, _refusals_in_cli_terms(len(data)):
        if count == 1:
            _submit_one(
                ctx,
                client=client,
                task_type=task_type,
                data=data,
                options=options,
                wait=wait,
                timeout_wait=timeout_wait,
            )
        else:
            _submit_many(
                ctx,
                client=client,
                task_type=task_type,
                data=data,
                options=options,
                count=count,
                wait=wait,
                timeout_wait=timeout_wait,
            )


@contextmanager
def _refusals_in_cli_terms(payload_size: int) -> Iterator[None]:
    try:
        yield
    except (ValidationError, ProtocolError) as exc:
        if exc.code not in (ErrorCode.FRAME_TOO_LARGE, *_SPEC_CODES):
            raise
        raise in_cli_terms(exc, payload_size) from exc


#: Codes of refusals that name a field of the submitted task.
_SPEC_CODES: Final = (ErrorCode.INVALID_ARGUMENT, ErrorCode.PAYLOAD_TOO_LARGE)


def _submit_one(
    ctx: CliContext,
    *,
    client: Client,
    task_type: str,
    data: bytes,
    options: dict[str, Any],
    wait: bool,
    timeout_wait: float | None,
) -> None:
    task_id = client.submit(task_type, data, **options)
    if not wait:
        emit(ctx, {"id": task_id}, task_id)
        return
    info = client.wait(task_id, timeout=timeout_wait)
    if ctx.output != "table":
        emit(ctx, plain_record(info))
    elif info.state == "completed":
        # The bare result, so `tq submit echo '{"x": 1}' --wait` composes with other tools.
        click.echo(cell_bytes(info.result))
    if info.state != "completed":
        raise _outcome_error(info)


def _submit_many(
    ctx: CliContext,
    *,
    client: Client,
    task_type: str,
    data: bytes,
    options: dict[str, Any],
    count: int,
    wait: bool,
    timeout_wait: float | None,
) -> None:
    from tq.client import task_spec  # noqa: PLC0415 - see context.connect

    spec = task_spec(task_type, data, **options)
    ids: list[str] = []
    with _progress("submitting") as progress:
        bar = progress.add_task("submit", total=count)
        while len(ids) < count:
            n = min(BATCH, count - len(ids))
            ids += client.submit_many([spec] * n)
            progress.update(bar, completed=len(ids))
    result: dict[str, Any] = {"count": len(ids), "queue": options["queue"], "ids": ids}
    states: Counter[str] = Counter()
    if wait:
        with _progress("waiting") as progress:
            bar = progress.add_task("wait", total=count)
            for task_id in ids:
                states[client.wait(task_id, timeout=timeout_wait).state] += 1
                progress.advance(bar)
        result["states"] = dict(states)
    summary = f"submitted {len(ids)} tasks to queue {options['queue']}"
    if wait:
        summary += " (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")"
    emit(ctx, result, summary)
    failed = count - states["completed"]
    if wait and failed:
        raise TaskFailedError(f"{failed} of {count} tasks did not complete")
