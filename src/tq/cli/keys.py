"""``tq keys create|list|revoke``: API key administration over the TCP protocol (an admin key
of every queue). ``create`` prints the secret once: the broker keeps only its bcrypt hash.

``--expires`` reads a duration from now ("30d", "12h", "90m") or an RFC 3339 instant;
``--rate`` reads ``CLASS=RATE/BURST`` per permission class ("submit=100/200").
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import click
from rich.table import Table
from rich.text import Text

from tq.cli.admin import table_time
from tq.cli.context import CliContext, connect, emit, plain
from tq.core.keys import PERMISSIONS
from tq.core.times import AGE_UNITS, parse_rfc3339
from tq.protocol import KeyInfo, KeySpec, RateSpec

_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_RATE: Final = re.compile(r"(\w+)=([0-9]+(?:\.[0-9]+)?)/([0-9]+)")


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_permissions(text: str) -> list[str]:
    names = _names(text)
    bad = [p for p in names if p not in PERMISSIONS]
    if not names or bad:
        raise click.BadParameter(
            f"{', '.join(bad) or 'none given'}: expected a comma-separated list of "
            f"{', '.join(PERMISSIONS)}",
            param_hint="--permissions",
        )
    return list(dict.fromkeys(names))


def parse_expiry(text: str, now: float) -> float:
    """Unix seconds of ``--expires``: a duration from ``now`` or an RFC 3339 instant."""
    if m := _DURATION.fullmatch(text.strip()):
        return now + float(m[1]) * AGE_UNITS[m[2]]
    try:
        when = parse_rfc3339(text.strip())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expires") from None
    if when is None:
        raise click.BadParameter(
            f"{text!r}: give a duration such as 30d, 12h or 90m, or an RFC 3339 time "
            "(2030-01-01T00:00:00Z)",
            param_hint="--expires",
        )
    if when <= now:
        raise click.BadParameter(f"{text} is in the past", param_hint="--expires")
    return when


def parse_rates(items: tuple[str, ...]) -> dict[str, RateSpec] | None:
    """``("submit=100/200", "read=50/100")`` (or comma-separated) -> per-class buckets."""
    rates: dict[str, RateSpec] = {}
    for item in (part for text in items for part in _names(text)):
        m = _RATE.fullmatch(item)
        if m is None or m[1] not in PERMISSIONS or float(m[2]) <= 0 or int(m[3]) < 1:
            raise click.BadParameter(
                f"{item!r}: expected CLASS=RATE/BURST, CLASS one of {', '.join(PERMISSIONS)}, "
                "RATE > 0 per second, BURST >= 1 (e.g. submit=100/200)",
                param_hint="--rate",
            )
        rates[m[1]] = RateSpec(rate=float(m[2]), burst=int(m[3]))
    return rates or None


def key_data(key: KeyInfo) -> dict[str, Any]:
    return plain(key)


@click.group("keys")
def keys_group() -> None:
    """API keys: create (the secret is shown once), list, revoke. Needs an admin key."""


@keys_group.command("create")
@click.option("--name", required=True, help="What the key is for (shown by tq keys list).")
@click.option("--permissions", required=True, help="Comma-separated: submit, read, work, admin.")
@click.option("--queues", help="Comma-separated queues the key is limited to (default: all).")
@click.option("--expires", help="Lifetime (30d, 12h, 90m) or RFC 3339 time (default: never).")
@click.option(
    "--rate", multiple=True, metavar="CLASS=RATE/BURST", help="Own rate limit (repeatable)."
)
@click.pass_obj
def create_cmd(
    ctx: CliContext,
    name: str,
    permissions: str,
    queues: str | None,
    expires: str | None,
    rate: tuple[str, ...],
) -> None:
    """Create an API key and print its secret (this is the only time it is shown)."""
    spec = KeySpec(
        name=name,
        permissions=parse_permissions(permissions),  # type: ignore[arg-type]
        queues=None if queues is None else _names(queues) or None,
        expires_at=None if expires is None else parse_expiry(expires, time.time()),
        rate_limits=parse_rates(rate),  # type: ignore[arg-type]
    )
    with connect(ctx) as client:
        key, secret = client.create_key(spec)
    data = {"secret": secret, **key_data(key)}
    if ctx.output == "table":
        click.echo(f"secret: {secret}")
        click.echo("(shown once: store it now; the broker keeps only its hash)", err=True)
        click.echo(f"id: {key.id}")
        return
    emit(ctx, data)


@keys_group.command("list")
@click.pass_obj
def list_cmd(ctx: CliContext) -> None:
    """Every API key (revoked ones too); never a secret."""
    with connect(ctx) as client:
        keys = client.list_keys()
    table = Table(title=f"API keys ({len(keys)})", title_justify="left")
    for column in ("id", "name", "permissions", "queues", "created (UTC)", "expires", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.id,
            Text(k.name),
            ",".join(k.permissions),
            Text("all" if k.queues is None else ",".join(k.queues)),
            table_time(k.created_at),
            table_time(k.expires_at) or "never",
            table_time(k.revoked_at),
        )
    emit(ctx, [key_data(k) for k in keys], table)


@keys_group.command("revoke")
@click.argument("key_id", metavar="ID")
@click.pass_obj
def revoke_cmd(ctx: CliContext, key_id: str) -> None:
    """Revoke a key by its id: it authenticates nothing from then on, on open connections
    too."""
    with connect(ctx) as client:
        key = client.revoke_key(key_id)
    emit(ctx, key_data(key), f"revoked {key.id} ({key.name})")
