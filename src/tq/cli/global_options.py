"""The global options, ``--config --set --output/-o --url --api-key`` and the TLS files
``--tls-ca-file --tls-cert-file --tls-key-file``: defined once, accepted before the command and
after it (``tq -o json status ID`` and ``tq status ID -o json`` alike).

Every command registered on the ``tq`` group gets the same options (``attach``); their values
go to the one ``CliContext`` of the invocation instead of to the command's function. Given twice
(before and after the command), the later one wins, and ``--set`` items add up.
"""

from __future__ import annotations

from typing import Any, Final

import click
from click.core import ParameterSource

from tq.cli.context import API_KEY_ENV, URL_ENV, CliContext

_STATE: Final = "tq.cli.context"
OUTPUTS: Final = ("table", "json", "yaml")


def cli_context(ctx: click.Context) -> CliContext:
    """The invocation's CliContext (``ctx.meta`` is shared by a group and its commands)."""
    state = ctx.meta.get(_STATE)
    if not isinstance(state, CliContext):
        state = ctx.meta[_STATE] = CliContext()
    return state


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    name = param.name
    if name is None or ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT):
        return  # not typed here: must not undo what was typed before the command
    cli_context(ctx).given(name, value)


def global_params() -> list[click.Option]:
    """Fresh option objects, one set per command (click keeps per-parameter state)."""
    common: dict[str, Any] = {"expose_value": False, "callback": _remember}
    return [
        click.Option(
            ["--config", "config_path"],
            type=click.Path(dir_okay=False),
            help="YAML settings file (else $TQ_CONFIG).",
            **common,
        ),
        click.Option(
            ["--set", "sets"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a setting, e.g. --set broker.port=7421 (repeatable).",
            **common,
        ),
        click.Option(
            ["--output", "-o", "output"],
            type=click.Choice(OUTPUTS),
            help="table (default), json or yaml.",
            **common,
        ),
        click.Option(
            ["--url", "url_flag"],
            metavar="URL",
            help=(
                "Broker address, tq://host:port; a cluster's nodes comma-separated, "
                f"tq://a:7420,tq://b:7420 (else ${URL_ENV}, else worker.broker_url)."
            ),
            **common,
        ),
        click.Option(
            ["--api-key", "api_key_flag"],
            metavar="KEY",
            help=f"API key for a broker with auth (else ${API_KEY_ENV}, else worker.api_key).",
            **common,
        ),
        *(
            click.Option(
                [flag, name], type=click.Path(dir_okay=False), metavar="FILE", help=doc, **common
            )
            for flag, name, doc in _TLS_FLAGS
        ),
    ]


#: Shorthands of the worker.tls_* settings: ``--tls-ca-file F`` is ``--set worker.tls_ca_file=F``.
_TLS_FLAGS = (
    ("--tls-ca-file", "tls_ca_file", "CA bundle a tqs:// broker is verified against."),
    ("--tls-cert-file", "tls_cert_file", "Client certificate for mutual TLS (with its key)."),
    ("--tls-key-file", "tls_key_file", "Private key of --tls-cert-file."),
)


def attach(command: click.Command) -> click.Command:
    """Give ``command`` the global options (after its own, so its help lists them last)."""
    taken = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for param in global_params():
        if clash := taken.intersection(param.opts):
            raise RuntimeError(f"tq {command.name}: {', '.join(sorted(clash))} is a global option")
        command.params.append(param)
    return command
