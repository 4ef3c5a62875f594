"""The ``tq`` group, its global options, ``config`` and ``inspect``, and the entry points.

Global options: ``--config FILE`` (else ``TQ_CONFIG``), ``--set section.key=value`` (repeatable,
highest precedence), ``--output table|json|yaml`` and ``--url`` (else ``TQ_BROKER_URL``, else
``worker.broker_url``). Every TqError becomes one line ``error: [CODE] message`` on stderr and a
non-zero exit (1 when a task failed remotely, 2 otherwise), never a traceback.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import yaml
from rich.table import Table

from tq.cli import admin, bench, serve, submit
from tq.cli.context import (
    EXIT_ERROR,
    EXIT_TASK_FAILED,
    CliContext,
    emit,
    error_line,
    parse_pairs,
)
from tq.cli.extras import require_server
from tq.config import dump, load
from tq.core.layout import Counters
from tq.core.model import TaskState
from tq.errors import TaskFailedError, TqError

URL_ENV = "TQ_BROKER_URL"


class _Group(click.Group):
    """Translates TqError here, not in ``main()``, so ``CliRunner`` tests see the same lines."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TqError as exc:
            click.echo(error_line(exc), err=True)
            ctx.exit(EXIT_TASK_FAILED if isinstance(exc, TaskFailedError) else EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.option(
    "--url",
    envvar=URL_ENV,
    default=None,
    help=f"Broker URL (tq://host:port); default ${URL_ENV}, else worker.broker_url.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    sets: tuple[str, ...],
    output: str,
    url: str | None,
) -> None:
    """tq: a durable, fast distributed task queue."""
    settings = load(config_path, overrides=parse_pairs(sets, "--set"))
    ctx.obj = CliContext(
        settings=settings,
        output=output,
        url=url or settings.worker.broker_url,
        config_path=config_path,
        sets=sets,
    )


@cli.command("config")
@click.pass_obj
def config_cmd(ctx: CliContext) -> None:
    """Print the effective configuration (defaults < file < TQ_* env < --set)."""
    data = dump(ctx.settings)
    if ctx.output == "table":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        emit(ctx, data)


@cli.command("inspect")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.pass_obj
def inspect_cmd(ctx: CliContext, data_dir: str | None) -> None:
    """Open the data directory (stop the broker first), rebuild the state, summarise it."""
    require_server("inspect", "opens a broker's data dir")
    # Imported here: RocksDB comes with the server extra, which client commands do without.
    from tq.storage import open_store  # noqa: PLC0415
    from tq.storage.recovery import recover  # noqa: PLC0415

    path = data_dir or str(ctx.settings.persistence.data_dir)
    t0 = time.perf_counter()
    with open_store(path) as store:
        rec = recover(store, time.time())
    elapsed = time.perf_counter() - t0
    m = rec.machine
    counts = {s.value: n for s, n in m.counts().items() if not s.is_terminal}
    depths = {
        q: dict(zip(("low", "normal", "high"), d, strict=True)) for q, d in m.queue_depths().items()
    }
    counters = {f: getattr(m.meta.counters, f) for f in Counters.__struct_fields__}
    workers = [w.id for w in m.workers()]
    data = {
        "data_dir": path,
        "recovered_tasks": rec.tasks,
        "recovery_seconds": round(elapsed, 3),
        "live": counts,
        "queues": depths,
        "workers": workers,
        "totals": counters,
    }
    table = Table(title=f"tq data dir {path} (rebuilt in {elapsed:.3f} s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.IN_PROGRESS, TaskState.FAILED):
        table.add_row(state.value, f"{counts[state.value]:,}")
    for q, d in depths.items():
        table.add_row(f"queue {q} (high/normal/low)", f"{d['high']}/{d['normal']}/{d['low']}")
    table.add_row("workers", str(len(workers)))
    for k, v in counters.items():
        table.add_row(f"total {k}", f"{v:,}")
    emit(ctx, data, table)


for _command in (
    submit.submit_cmd,
    admin.status_cmd,
    admin.list_cmd,
    admin.cancel_cmd,
    admin.stats_cmd,
    admin.workers_cmd,
    admin.queues_cmd,
    serve.broker_cmd,
    serve.worker_cmd,
    serve.dev_cmd,
    bench.bench_cmd,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None, prog_name: str = "tq") -> None:
    """Entry point of ``tq`` and ``tq-admin``; exits with the command's status."""
    try:
        status = cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(status if isinstance(status, int) else 0)


#: Global options that take a value; ``tq-broker``/``tq-worker`` accept them anywhere.
_GLOBAL_OPTIONS = ("--config", "--set", "--output", "-o", "--url")


def hoist_global_options(command: str, argv: list[str]) -> list[str]:
    """``tq-worker mod --set k=v`` -> ``--set k=v worker mod``: click wants globals first."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_OPTIONS and "=" not in arg and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 2
            continue
        if name in _GLOBAL_OPTIONS or (arg.startswith("-o") and len(arg) > 2 and arg[1] != "-"):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return [*front, command, *rest]


def broker_main() -> None:
    """``tq-broker``: the same as ``tq broker``."""
    main(hoist_global_options("broker", sys.argv[1:]), prog_name="tq")


def worker_main() -> None:
    """``tq-worker``: the same as ``tq worker``."""
    main(hoist_global_options("worker", sys.argv[1:]), prog_name="tq")
