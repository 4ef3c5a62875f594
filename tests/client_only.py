"""Run Python as on a client-only install (``pip install tq``, no ``server`` extra): the
packages of the server extra cannot be imported. ``--no-uvloop`` refuses uvloop too, as on a
platform its marker excludes.

    python tests/client_only.py [--no-uvloop] -m tq ARGS...   # the tq command
    python tests/client_only.py [--no-uvloop] -c CODE
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType

#: The modules of the server extra (tq.cli.extras.SERVER_EXTRA; a unit test keeps them equal),
#: and starlette, which only FastAPI brings.
SERVER_MODULES = (
    "rocksdict",
    "fastapi",
    "uvicorn",
    "websockets",
    "grpc",
    "grpc_health",
    "grpc_reflection",
    "google.protobuf",
    "prometheus_client",
    "bcrypt",
    "aetcd",
    "croniter",
    "starlette",
)


class Refuse(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: these packages (and their submodules) are not installed."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def main(argv: list[str]) -> None:
    refused = list(SERVER_MODULES)
    if argv[:1] == ["--no-uvloop"]:
        refused.append("uvloop")
        argv = argv[1:]
    loaded = [n for n in refused if n in sys.modules]
    if loaded:
        raise SystemExit(f"client_only: already imported: {loaded}")
    sys.meta_path.insert(0, Refuse(refused))
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[:1] == ["-c"] and len(argv) > 1:
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<client_only -c>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
