"""Dependencies point inward (STYLE.md): a layer imports only the layers beneath it.

cli -> broker | worker -> api | cluster | client -> protocol | storage -> core -> errors
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tq

SRC = Path(tq.__file__).parent

#: What each package may import from tq (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "protocol": {"core", "errors"},
    "storage": {"core", "errors"},
    "config": {"errors"},
    "client": {"protocol", "core", "errors", "config"},
    "worker": {"client", "protocol", "core", "errors", "config"},
    "broker": {"storage", "protocol", "core", "errors", "config"},
    "api": {"broker", "storage", "protocol", "core", "errors", "config"},
    "testing": {"errors"},
    "bench": {"client", "testing", "core", "errors"},
    "cli": {
        "bench",
        "broker",
        "worker",
        "client",
        "storage",
        "protocol",
        "core",
        "errors",
        "config",
    },
}
#: Modules of the pure layers may not import I/O, clocks or logging.
PURE = {"core", "protocol"}
IMPURE_MODULES = {"asyncio", "socket", "time", "logging", "rocksdict", "threading", "random"}


def tq_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_imports_only_layers_beneath_it(path: Path) -> None:
    pkg = package_of(path)
    if pkg not in ALLOWED:
        return  # the top-level package namespace and layers not yet written
    for name in tq_imports(path):
        parts = name.split(".")
        if parts[0] == "tq" and len(parts) > 1:
            target = parts[1]
            assert target == pkg or target in ALLOWED[pkg], f"{path}: {pkg} imports tq.{target}"
        if pkg in PURE:
            assert parts[0] not in IMPURE_MODULES, f"{path}: pure layer {pkg} imports {name}"


def test_the_public_namespace_is_curated() -> None:
    exported = set(tq.__all__)
    assert all(hasattr(tq, name) for name in exported)
    assert {"TqError", "ErrorCode", "TaskState"} <= exported
    assert not {n for n in exported if n.startswith("_") and n != "__version__"}
