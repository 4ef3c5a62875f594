"""Safe defaults: a broker that anyone on the network could reach, and that asks nobody who
they are, does not start unless told so explicitly.

Exposed: a door that serves tasks (TCP, REST/WebSocket, gRPC; not metrics) listens on an
address that is not loopback. Guarded: API keys are required (``auth.enabled``) or every door
demands a client certificate signed by ``auth.tls_ca_file`` (``auth.require_client_cert``:
mutual TLS is authentication too). An exposed, unguarded broker refuses to start, unless
``auth.insecure`` (``tq broker --insecure``) is set; it then starts and logs a warning.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from tq.config import Settings
from tq.errors import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (a name is resolved; one that
    does not resolve is not known to be loopback)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses
    )


def exposed_doors(settings: Settings) -> list[str]:
    """``key=host`` of each enabled task-serving door listening beyond loopback."""
    api = settings.api
    listeners = [
        ("broker.host", settings.broker.host, True),
        ("api.rest_host", api.rest_host, api.http_enabled),
        ("api.grpc_host", api.grpc_host, api.grpc_enabled),
    ]
    return [f"{key}={host}" for key, host, on in listeners if on and not is_loopback(host)]


def check_exposure(settings: Settings) -> None:
    """Refuse (ConfigError, one line) an exposed broker that asks nobody who they are, unless
    ``auth.insecure``; then log a warning and go on."""
    auth = settings.auth
    if auth.enabled or auth.require_client_cert:
        return
    exposed = exposed_doors(settings)
    if not exposed:
        return
    where = ", ".join(exposed)
    if auth.insecure:
        log.warning(
            "broker.insecure listening=%s: no API key or client certificate is required, so "
            "anyone who reaches these addresses can submit, claim, read and cancel tasks",
            where,
        )
        return
    raise ConfigError(
        f"refusing to listen on {where} with nobody authenticated (auth.enabled and "
        "auth.require_client_cert are off): anyone who reaches it could run any task. Bind to "
        "127.0.0.1, turn on API keys or client certificates, or accept the risk with "
        "--insecure (auth.insecure=true)"
    )
