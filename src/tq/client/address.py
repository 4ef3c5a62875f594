"""Broker addresses: ``tq://host:port`` URLs (``tqs://`` for TLS, see ``tq.client.tls``), lists
of them (the nodes of a cluster), and where the default comes from.

A list is a sequence of URLs or one string of comma-separated URLs, each with its scheme
(``tq://a:7420,tq://b:7420``), all plaintext or all TLS. The default is ``$TQ_BROKER_URL``
(which may be such a list), else ``tq://127.0.0.1:7420``: what a local ``tq broker`` listens
on. A bad URL is a ConfigError naming it, raised when the client is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from tq.errors import ConfigError

DEFAULT_PORT: Final = 7420
DEFAULT_URL: Final = "tq://127.0.0.1:7420"
URL_ENV: Final = "TQ_BROKER_URL"


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tqs' if self.tls else 'tq'}://{host}:{self.port}"


def parse_url(url: str) -> BrokerAddress:
    """``tq://host:port`` (or ``tqs://`` for TLS); the port defaults to 7420."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker url {url!r} is not like tq://host:port") from None
    if parts.scheme not in ("tq", "tqs") or not parts.hostname:
        raise ConfigError(f"broker url {url!r} is not like tq://host:port (scheme tq or tqs)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker url {url!r} has a path or query; expected tq://host:port")
    return BrokerAddress(
        parts.hostname, DEFAULT_PORT if port is None else port, parts.scheme == "tqs"
    )


def parse_urls(urls: str | Sequence[str]) -> tuple[BrokerAddress, ...]:
    """The brokers of ``urls``: a sequence of URLs, or one string of URLs separated by commas
    (blanks around them ignored); in order, each once. ConfigError for an empty list, a bad
    URL (naming it), or plaintext and TLS URLs mixed (one TLS setting serves them all)."""
    given = urls.split(",") if isinstance(urls, str) else list(urls)
    items = [u.strip() for u in given if isinstance(u, str)]
    if len(items) != len(given):
        raise ConfigError(f"broker urls must be strings, got {urls!r}")
    if not any(items):
        raise ConfigError(f"no broker url in {urls!r}: expected tq://host:port[,tq://host:port]")
    out: list[BrokerAddress] = []
    for item in items:
        if not item:
            raise ConfigError(f"broker url list {urls!r} has an empty item (a stray comma?)")
        if "://" not in item and len(items) > 1:
            raise ConfigError(
                f"broker url {item!r} in {urls!r} has no scheme: write every url of a list "
                "in full, like tq://a:7420,tq://b:7420"
            )
        address = parse_url(item)
        if address not in out:
            out.append(address)
    if len({a.tls for a in out}) > 1:
        raise ConfigError(
            f"broker urls {urls!r} mix tq:// and tqs://: the nodes of one cluster are all "
            "plaintext or all TLS"
        )
    return tuple(out)


def leader_address(leader: str, like: BrokerAddress) -> BrokerAddress | None:
    """The address a NOT_LEADER refusal names (``host:port``, ``[v6]:port``), with the scheme
    of ``like`` (the nodes of a cluster share it); None if it is not such an address."""
    try:
        parts = urlsplit(f"//{leader}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.path or parts.query or parts.fragment:
        return None
    return BrokerAddress(parts.hostname, port, like.tls)
