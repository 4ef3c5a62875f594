"""The ``server`` extra: what a broker needs beyond ``pip install tq`` (client, worker, CLI).

A command that runs or opens a broker (``tq broker``, ``tq dev``, ``tq bench``, ``tq inspect``)
checks for it first, so a client-only install answers with one line naming the missing
packages and how to add them, instead of a traceback from deep inside the broker.
"""

from __future__ import annotations

import importlib.util

from tq.cli.context import fail

#: pyproject.toml's ``server`` extra, each distribution with the module it provides
#: (tests/unit/test_packaging.py keeps the two lists equal).
SERVER_EXTRA: dict[str, str] = {
    "rocksdict": "rocksdict",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "websockets": "websockets",
    "grpcio": "grpc",
    "grpcio-health-checking": "grpc_health",
    "grpcio-reflection": "grpc_reflection",
    "protobuf": "google.protobuf",
    "prometheus-client": "prometheus_client",
    "bcrypt": "bcrypt",
    "aetcd": "aetcd",
    "croniter": "croniter",
}

INSTALL_HINT = "pip install 'tq[server]'"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


def missing_server_packages() -> list[str]:
    """The distributions of the server extra whose module cannot be imported here."""
    return [dist for dist, module in SERVER_EXTRA.items() if not _importable(module)]


def require_server(command: str, does: str = "runs a broker") -> None:
    """Stop ``tq COMMAND`` (which ``does`` so) with one line when the server extra is missing."""
    missing = missing_server_packages()
    if missing:
        fail(
            f"`tq {command}` {does}, which needs the server extra "
            f"(missing: {', '.join(missing)}): {INSTALL_HINT}"
        )
