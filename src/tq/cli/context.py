"""What every ``tq`` command shares: the context object, the output rules and the broker access.

Output rules: ``table`` prints rich tables for people; ``json`` and ``yaml`` print plain data,
with ids as canonical UUID text, times as RFC 3339 UTC (``tq.core.times``, shared with
REST), and bytes as UTF-8 text when they decode, else ``{"base64": "..."}`` (``base64:...``
in a table cell).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec
import yaml
from rich.console import Console, RenderableType

from tq.config import Settings, load
from tq.core.ids import format_task_id
from tq.core.times import format_rfc3339
from tq.errors import TqError, UnavailableError

if TYPE_CHECKING:
    from tq.client import Client, TlsConfig

#: Where ``--url`` comes from when it is not given.
URL_ENV = "TQ_BROKER_URL"
#: Where ``--api-key`` comes from when it is not given (before ``worker.api_key``).
API_KEY_ENV = "TQ_API_KEY"
err_console = Console(stderr=True)
#: Width of tables written to a pipe or file: rich would assume 80 columns and squeeze a
#: 36-character id column into ellipses; lines that run long are the lesser harm.
PIPE_WIDTH = 200


def out_console() -> Console:
    """A console on the current stdout (tests swap it), full width when it is not a terminal."""
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)


#: Exit status of a usage or broker error; a task that failed remotely exits with 1 instead,
#: so a script can tell "the job failed" from "the command could not run".
EXIT_ERROR = 2
EXIT_TASK_FAILED = 1


class CliError(click.ClickException):
    """A one-line ``error: ...`` for failures that are not TqErrors (unreachable broker, ...)."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def fail(message: str) -> NoReturn:
    raise CliError(message)


def parse_pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
    """``("k=v", ...)`` -> ``{"k": "v"}``; names the option and the bad item otherwise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint=option)
        out[key.strip()] = value
    return out


@dataclass
class CliContext:
    """The global options as given, before or after the command (a later one wins; ``--set``
    items add up), and the settings they make. The settings are loaded on first use, which
    comes after the command's own options are parsed."""

    output: str = "table"
    #: ``--url`` as typed (None: not given); ``url`` adds the environment and the settings.
    url_flag: str | None = None
    #: ``--api-key`` as typed; ``api_key`` adds the environment and the settings.
    api_key_flag: str | None = None
    config_path: str | None = None
    sets: tuple[str, ...] = ()
    _settings: Settings | None = field(default=None, repr=False)

    def given(self, name: str, value: object) -> None:
        """Record a global option as typed: ``sets`` adds up, others replace."""
        if name == "sets":
            assert isinstance(value, tuple)
            self.sets = (*self.sets, *value)
        elif name.startswith("tls_"):  # shorthand of --set worker.tls_*=FILE
            self.sets = (*self.sets, f"worker.{name}={value}")
        else:
            setattr(self, name, value)
        self._settings = None  # loaded again, with what was just typed

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self.reload({})
        return self._settings

    @property
    def tls(self) -> TlsConfig | None:
        """The worker.tls_* files for a tqs:// broker (None: none set, the system's CAs)."""
        w = self.settings.worker
        if w.tls_ca_file is None and w.tls_cert_file is None:
            return None
        from tq.client import TlsConfig  # noqa: PLC0415 - see connect()

        return TlsConfig(ca_file=w.tls_ca_file, cert_file=w.tls_cert_file, key_file=w.tls_key_file)

    @property
    def url(self) -> str:
        """``--url``, else ``$TQ_BROKER_URL``, else ``worker.broker_url``: one URL, or a
        cluster's nodes comma-separated."""
        return self.url_flag or os.environ.get(URL_ENV) or self.settings.worker.broker_url

    @property
    def api_key(self) -> str | None:
        """``--api-key``, else ``$TQ_API_KEY``, else ``worker.api_key`` (None: no key)."""
        if self.api_key_flag or os.environ.get(API_KEY_ENV):
            return self.api_key_flag or os.environ.get(API_KEY_ENV)
        secret = self.settings.worker.api_key
        return None if secret is None else secret.get_secret_value()

    def reload(
        self, overrides: Mapping[str, object], origins: Mapping[str, str] | None = None
    ) -> Settings:
        """The settings again with command flags as the highest-precedence overrides;
        ``origins`` names the flag each override came from, so an error names what was typed."""
        pairs = parse_pairs(self.sets, "--set")
        named = {key: f"--set {key}={value}" for key, value in pairs.items()}
        merged: dict[str, object] = {**pairs, **overrides}
        return load(self.config_path, overrides=merged, origins={**named, **(origins or {})})

    def global_args(self) -> list[str]:
        """``--config``/``--set`` as given, so a child ``python -m tq`` sees the same config."""
        args = ["--config", self.config_path] if self.config_path else []
        for item in self.sets:
            args += ["--set", item]
        return args


def emit(ctx: CliContext, data: Any, table: RenderableType | None = None) -> None:
    """Print ``data`` as JSON or YAML, or ``table`` (rich) for the table output."""
    if ctx.output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    elif ctx.output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    elif isinstance(table, str):
        click.echo(table)  # plain text (an id): no rich markup or wrapping
    elif table is not None:
        out_console().print(table)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def plain_bytes(data: bytes | None) -> str | dict[str, str] | None:
    """UTF-8 text when it decodes, else ``{"base64": ...}``: JSON cannot carry raw bytes."""
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def cell_bytes(data: bytes | None) -> str:
    value = plain_bytes(data)
    if isinstance(value, dict):
        return f"base64:{value['base64']}"
    return "" if value is None else value


def iso(ts: float | None) -> str | None:
    return None if ts is None else format_rfc3339(ts)


_TIME_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "scheduled_at",
        "lease_expires_at",
        "expires_at",
        "completed_at",
        "started_at",
        "purge_at",
        "registered_at",
        "last_heartbeat",
        "revoked_at",
        "next_at",
        "last_fired_at",
    }
)


def plain(record: msgspec.Struct) -> dict[str, Any]:
    """A wire record as plain data under the output rules above."""
    out: dict[str, Any] = {}
    for name, value in msgspec.structs.asdict(record).items():
        if name in ("id", "task_id") and isinstance(value, bytes):
            out[name] = format_task_id(value)
        elif name == "depends_on":
            out[name] = [format_task_id(v) for v in value]
        elif name in _TIME_FIELDS:
            out[name] = iso(value)
        elif isinstance(value, bytes):
            out[name] = plain_bytes(value)
        elif isinstance(value, msgspec.Struct):
            out[name] = plain(value)
        elif isinstance(value, dict):
            out[name] = {
                k: plain(v) if isinstance(v, msgspec.Struct) else v for k, v in value.items()
            }
        else:
            out[name] = value
    return out


def _network_cause(exc: BaseException) -> OSError | None:
    """The socket error behind ``exc``, if any (the client wraps it in UnavailableError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__
    return None


@contextmanager
def connect(ctx: CliContext, *, reconnect: bool = False) -> Iterator[Client]:
    """A connected sync client; a refused or lost connection becomes one clear error line.

    One connection attempt per node: a command line should fail at once, not retry for
    seconds. With ``reconnect`` (a command that waits), a connection lost later is redialled
    until the command's own deadline, as any client's would be. With several nodes, the
    error names each URL tried and why it failed; a node that is not the leader hands the
    command on to the leader (``tq.client.session``).
    """
    # Imported late: `tq config` and `tq broker` should not pay for (or need) the client.
    from tq.client import Client  # noqa: PLC0415

    try:
        with Client(ctx.url, reconnect=reconnect, api_key=ctx.api_key, tls=ctx.tls) as client:
            if reconnect:
                client.connect(retry=False)
            yield client
    except (OSError, UnavailableError) as exc:
        cause = _network_cause(exc)
        if cause is None:
            raise
        if isinstance(exc, UnavailableError) and "," in ctx.url:
            raise CliError(exc.message) from exc  # names every URL tried, with its error
        reason = os.strerror(cause.errno) if cause.errno else str(cause) or type(cause).__name__
        raise CliError(f"cannot reach the broker at {ctx.url}: {reason}") from exc


def error_line(exc: TqError) -> str:
    return f"error: {exc}"  # TqError.__str__ is "[CODE] message"
