"""Broker addresses: ``tq://host:port`` URLs (``tqs://`` for TLS, see ``tq.client.tls``) and
where the default comes from.

The default is ``$TQ_BROKER_URL``, else ``tq://127.0.0.1:7420``: what a local ``tq broker``
listens on. A bad URL is a ConfigError naming it, raised when the client is built.
"""

from __future__ import annotations

import os
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
