"""``tq`` subcommands. Errors are printed as one line with their stable code, never a traceback.

Global options: ``--config FILE`` (else ``TQ_CONFIG``), ``--set section.key=value`` (repeatable
overrides, highest precedence) and ``--output table|json|yaml``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from tq.config import Settings, dump, load
from tq.core.layout import Counters
from tq.core.model import TaskState
from tq.errors import TqError
from tq.storage import open_store
from tq.storage.recovery import recover

_console = Console()


class _Ctx:
    def __init__(self, settings: Settings, output: str) -> None:
        self.settings = settings
        self.output = output


def _parse_sets(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not section.key=value", param_hint="--set")
        out[key.strip()] = value
    return out


def emit(ctx: _Ctx, data: dict[str, Any], table: Table | None = None) -> None:
    """Print ``data`` as JSON or YAML, or ``table`` (rich) for the table output."""
    if ctx.output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    elif ctx.output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    elif table is not None:
        _console.print(table)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a setting.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, sets: tuple[str, ...], output: str) -> None:
    """tq: a durable, fast distributed task queue."""
    ctx.obj = _Ctx(load(config_path, overrides=_parse_sets(sets)), output)


@cli.command("config")
@click.pass_obj
def config_cmd(ctx: _Ctx) -> None:
    """Print the effective configuration (defaults < file < TQ_* env < --set)."""
    data = dump(ctx.settings)
    if ctx.output == "table":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        emit(ctx, data)


@cli.command("inspect")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.pass_obj
def inspect_cmd(ctx: _Ctx, data_dir: str | None) -> None:
    """Open the data directory (stop the broker first), rebuild the state, summarise it."""
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
    data = {
        "data_dir": path,
        "recovered_tasks": rec.tasks,
        "recovery_seconds": round(elapsed, 3),
        "live": counts,
        "queues": depths,
        "workers": [w.id for w in m.workers()],
        "totals": counters,
    }
    table = Table(title=f"tq data dir {path} (rebuilt in {elapsed:.3f} s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.IN_PROGRESS, TaskState.FAILED):
        table.add_row(state.value, f"{counts[state.value]:,}")
    for q, d in depths.items():
        table.add_row(f"queue {q} (high/normal/low)", f"{d['high']}/{d['normal']}/{d['low']}")
    table.add_row("workers", str(len(data["workers"])))  # type: ignore[arg-type]
    for k, v in counters.items():
        table.add_row(f"total {k}", f"{v:,}")
    emit(ctx, data, table)


def main() -> None:
    """Entry point: every TqError becomes one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except TqError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
