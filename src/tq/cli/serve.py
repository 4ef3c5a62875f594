"""The long-running commands: ``tq broker`` and ``tq worker`` (``tq dev`` lives in ``dev``).

Their flags become configuration overrides, so they are validated like every other setting and
``tq config`` can show what a flag would do. This is where logging is configured: text for
people, or JSON for log collectors (one object per line: ts, level, logger, msg, and the
event name and key=value fields of our event-style messages).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from tq.cli.context import CliContext, fail
from tq.cli.dev import dev_cmd
from tq.cli.extras import require_server
from tq.config import LogFormat, LogLevel, Settings

__all__ = ["broker_cmd", "configure_logging", "dev_cmd", "worker_cmd"]

F = TypeVar("F", bound=Callable[..., Any])


#: A %-conversion of a log template ("%%" included, to be skipped).
_CONVERSION = re.compile(r"%(?:%|[-#0 +]*\d*(?:\.\d+)?[a-zA-Z])")
_FIELD = re.compile(r"(\w+)=(\S+)")
_EVENT = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``key=%x`` and ``key=literal`` pairs of an event-style template, with the raw
    argument values (a count stays a number); {} when the template does not line up."""
    template, args = record.msg, record.args or ()
    if not isinstance(template, str) or not isinstance(args, tuple):
        return {}
    conversions = [m for m in _CONVERSION.finditer(template) if m.group() != "%%"]
    if len(conversions) != len(args):
        return {}
    value_at = {m.start(): arg for m, arg in zip(conversions, args, strict=True)}
    fields: dict[str, Any] = {}
    for pair in _FIELD.finditer(template):
        key, start = pair.group(1), pair.start(2)
        if start in value_at:
            fields[key] = _plain(value_at[start])
        elif "%" not in pair.group(2):
            fields[key] = pair.group(2)
    return fields


def _plain(value: object) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the event name and its fields (from
    ``"lease.expired count=%d"``: event "lease.expired", count 3); an exception travels as
    one escaped string, not many lines."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": msg,
        }
        event = msg.split(" ", 1)[0]
        if _EVENT.fullmatch(event):
            entry["event"] = event
        for key, value in event_fields(record).items():
            entry.setdefault(key, value)  # a field never hides ts, level, logger or msg
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Root logger to stderr; replaces earlier handlers so a second call does not double lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def logging_options(command: F) -> F:
    """``--log-level`` and ``--log-format``; unset, they come from the monitoring settings."""
    command = click.option(
        "--log-level",
        type=click.Choice([lvl.value for lvl in LogLevel], case_sensitive=False),
        help="Default: monitoring.log_level.",
    )(command)
    return click.option(
        "--log-format",
        type=click.Choice([f.value for f in LogFormat], case_sensitive=False),
        help="Default: monitoring.log_format.",
    )(command)


def _settings(ctx: CliContext, flags: dict[str, tuple[str, object]]) -> Settings:
    """The settings with the given flags (``{"broker.port": ("--port", 7421)}``) as overrides;
    a bad value is named by the flag it was typed as."""
    given = {key: flag_value for key, flag_value in flags.items() if flag_value[1] is not None}
    return ctx.reload(
        {key: value for key, (_, value) in given.items()},
        origins={key: flag for key, (flag, _) in given.items()},
    )


def _start_logging(settings: Settings, level: str | None, fmt: str | None) -> None:
    monitoring = settings.monitoring
    configure_logging(level or monitoring.log_level.value, (fmt or monitoring.log_format).lower())


@click.command("broker")
@click.option("--host", help="Listen address. Default: broker.host.")
@click.option("--port", type=int, help="TCP port; 0 picks a free one. Default: broker.port.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Default: persistence.data_dir.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Write {"host", "port", "pid"} here once listening.',
)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Listen beyond loopback although no client is authenticated (auth.insecure).",
)
@click.option(
    "--cluster",
    is_flag=True,
    default=None,
    help="Join the cluster replicated through etcd (raft.enabled); see docs/cluster.md.",
)
@click.option(
    "--etcd",
    help="Comma-separated etcd client URLs, e.g. http://127.0.0.1:2379 (raft.etcd_endpoints).",
)
@click.option("--node-id", help="This node's id in the cluster (raft.node_id).")
@logging_options
@click.pass_obj
def broker_cmd(
    ctx: CliContext,
    host: str | None,
    port: int | None,
    data_dir: str | None,
    ready_file: Path | None,
    insecure: bool | None,
    cluster: bool | None,
    etcd: str | None,
    node_id: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the broker until SIGTERM or SIGINT; SIGHUP reloads its TLS certificate."""
    require_server("broker")
    endpoints = None if etcd is None else [e.strip() for e in etcd.split(",") if e.strip()]
    settings = _settings(
        ctx,
        {
            "broker.host": ("--host", host),
            "broker.port": ("--port", port),
            "persistence.data_dir": ("--data-dir", data_dir),
            "auth.insecure": ("--insecure", insecure),
            "raft.enabled": ("--cluster", cluster),
            "raft.etcd_endpoints": ("--etcd", endpoints),
            "raft.node_id": ("--node-id", node_id),
        },
    )
    _start_logging(settings, log_level, log_format)
    from tq.broker.server import run_broker  # noqa: PLC0415 - only this command needs it

    where = f"{settings.broker.host}:{settings.broker.port}"
    try:
        status = run_broker(settings, ready_file=ready_file)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"cannot listen on {where}: the address is already in use (try --port)")
        fail(f"cannot start the broker on {where}: {exc.strerror or exc}")
    click.get_current_context().exit(status)


@click.command("worker")
@click.argument("modules", nargs=-1, metavar="[MODULE]...")
@click.option("--queues", "-Q", help="Comma-separated queues. Default: worker.queues.")
@click.option("--concurrency", "-c", type=int, help="Tasks run at once.")
@click.option("--pool", type=click.Choice(["asyncio", "thread", "process"]))
@click.option("--prefetch", type=int, help="Tasks claimed ahead beyond --concurrency.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", help="Worker name shown by the broker. Default: <hostname>-<pid>.")
@click.option("--shutdown-timeout", type=float, help="Seconds to finish in-flight tasks.")
@logging_options
@click.pass_obj
def worker_cmd(
    ctx: CliContext,
    modules: tuple[str, ...],
    queues: str | None,
    concurrency: int | None,
    pool: str | None,
    prefetch: int | None,
    burst: bool,
    name: str | None,
    shutdown_timeout: float | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run a worker of the handlers that importing each MODULE registers (several modules are
    served together; default: worker.handlers_module)."""
    settings = _settings(
        ctx,
        {
            "worker.queues": (
                "--queues",
                [q.strip() for q in queues.split(",")] if queues else None,
            ),
            "worker.concurrency": ("--concurrency", concurrency),
            "worker.pool": ("--pool", pool),
            "worker.prefetch": ("--prefetch", prefetch),
            "worker.name": ("--name", name),
            "worker.shutdown_timeout_s": ("--shutdown-timeout", shutdown_timeout),
        },
    )
    w = settings.worker
    names = list(modules) or ([w.handlers_module] if w.handlers_module else [])
    if not names:
        fail("name the handlers MODULE (or set worker.handlers_module)")
    _start_logging(settings, log_level, log_format)
    # Like `celery -A`: a console script's sys.path lacks the working directory, yet the
    # user's handler module usually lives there.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    from tq.worker.main import run_worker  # noqa: PLC0415 - only this command needs it

    status = run_worker(
        names,
        url=ctx.url,
        queues=w.queues,
        concurrency=w.concurrency,
        pool=w.pool.value,
        prefetch=w.prefetch,
        heartbeat_interval=w.heartbeat_interval_s,
        shutdown_timeout=w.shutdown_timeout_s,
        burst=burst,
        name=w.name,
        default_timeout=w.default_timeout_s,
        api_key=ctx.api_key,
        tls=ctx.tls,
    )
    click.get_current_context().exit(status)
