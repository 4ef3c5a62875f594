"""The ``tq`` group, ``config`` and ``inspect``, and the entry points.

Global options (``tq.cli.global_options``), before or after the command: ``--config FILE``
(else ``TQ_CONFIG``), ``--set section.key=value`` (repeatable, highest precedence),
``--output table|json|yaml``, ``--url`` (else ``TQ_BROKER_URL``, else ``worker.broker_url``),
``--api-key`` (else ``TQ_API_KEY``, else ``worker.api_key``) and
``--tls-ca-file``/``--tls-cert-file``/``--tls-key-file`` (``worker.tls_*``).
Every TqError becomes one line ``error: [CODE] message`` on stderr and a non-zero exit (1 when
a task failed remotely, 2 otherwise), never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import yaml

from tq.cli import (
    admin,
    bench,
    bulk,
    cluster,
    datadir,
    flow,
    keys,
    schedules,
    serve,
    submit,
    workers,
)
from tq.cli.context import (
    EXIT_ERROR,
    EXIT_TASK_FAILED,
    CliContext,
    emit,
    error_line,
)
from tq.cli.global_options import attach, cli_context, global_params
from tq.config import dump
from tq.errors import TaskFailedError, TqError
from tq.version import __version__


class _Group(click.Group):
    """Translates TqError here, not in ``main()``, so ``CliRunner`` tests see the same lines."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TqError as exc:
            click.echo(error_line(exc), err=True)
            ctx.exit(EXIT_TASK_FAILED if isinstance(exc, TaskFailedError) else EXIT_ERROR)


@click.group(
    cls=_Group,
    params=global_params(),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="tq", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """tq: a durable, fast distributed task queue.

    The global options are accepted before the command and after it.
    """
    # The command's own global options are parsed after this runs: the settings they make
    # are loaded when the command first needs them.
    ctx.obj = cli_context(ctx)


@click.command("config")
@click.pass_obj
def config_cmd(ctx: CliContext) -> None:
    """Print the effective configuration (defaults < file < TQ_* env < --set)."""
    data = dump(ctx.settings)
    if ctx.output == "table":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        emit(ctx, data)


for _command in (
    config_cmd,
    submit.submit_cmd,
    admin.status_cmd,
    admin.list_cmd,
    admin.cancel_cmd,
    bulk.retry_cmd,
    bulk.delete_cmd,
    bulk.purge_cmd,
    bulk.dead_letters_cmd,
    admin.stats_cmd,
    workers.workers_group,
    admin.queues_cmd,
    serve.broker_cmd,
    serve.worker_cmd,
    serve.dev_cmd,
    bench.bench_cmd,
    datadir.inspect_cmd,
    keys.keys_group,
    cluster.cluster_group,
    schedules.schedules_group,
    flow.limits_group,
):
    cli.add_command(attach(_command))
for _group in (
    keys.keys_group,
    cluster.cluster_group,
    schedules.schedules_group,
    admin.queues_cmd,  # pause, resume (tq.cli.flow)
    flow.limits_group,
    workers.workers_group,
):
    for _command in _group.commands.values():
        attach(_command)


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


def broker_main() -> None:
    """``tq-broker``: the same as ``tq broker``."""
    main(["broker", *sys.argv[1:]], prog_name="tq")


def worker_main() -> None:
    """``tq-worker``: the same as ``tq worker``."""
    main(["worker", *sys.argv[1:]], prog_name="tq")
