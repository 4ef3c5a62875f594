"""The dependency split of pyproject.toml: ``pip install tq`` is what a client, a worker and the
CLI's client commands import; the broker's packages are the ``server`` extra; every declared
dependency is imported by some code; uvloop is optional wherever it is used."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests import client_only

from tq.cli.extras import SERVER_EXTRA

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tq"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CLIENT_ONLY = ROOT / "tests" / "client_only.py"

#: The module each core distribution provides.
CORE = {
    "msgspec": "msgspec",
    "pydantic": "pydantic",
    "PyYAML": "yaml",
    "click": "click",
    "rich": "rich",
    "psutil": "psutil",
    "uvloop": "uvloop",
}
#: What a client-only install runs: everything but the broker, its doors, storage and bench.
CLIENT_SIDE = ("client", "worker", "cli", "config", "core", "protocol", "testing")
CLIENT_SIDE_FILES = ("errors.py", "eventloop.py", "version.py", "__init__.py", "__main__.py")


def requirement(text: str) -> tuple[str, str]:
    """(distribution name, environment marker) of a PEP 508 string."""
    name = re.match(r"[A-Za-z0-9._-]+", text)
    assert name is not None, text
    _, _, marker = text.partition(";")
    return name.group(), marker.strip()


def core() -> dict[str, str]:
    return dict(requirement(r) for r in PROJECT["dependencies"])


def extra(name: str) -> dict[str, str]:
    return dict(requirement(r) for r in PROJECT["optional-dependencies"][name])


def imported_modules(files: list[Path]) -> set[str]:
    """Every module name an import statement of ``files`` names (inside functions too)."""
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def provides(module: str, imported: set[str]) -> bool:
    return any(m == module or m.startswith(module + ".") for m in imported)


def test_the_core_holds_the_client_and_worker_packages_only() -> None:
    assert set(core()) == set(CORE)
    assert not set(core()) & set(extra("server"))


def test_the_server_extra_is_what_the_cli_checks_for_and_what_the_blocker_refuses() -> None:
    assert set(extra("server")) == set(SERVER_EXTRA)
    assert set(client_only.SERVER_MODULES) == {*SERVER_EXTRA.values(), "starlette"}


def test_the_dev_extra_brings_the_server_extra_for_the_tests() -> None:
    assert "tq[server]" in PROJECT["optional-dependencies"]["dev"]


def test_uvloop_is_declared_only_where_it_exists() -> None:
    marker = core()["uvloop"]
    assert "sys_platform != 'win32'" in marker
    assert "platform_python_implementation == 'CPython'" in marker


def test_every_declared_dependency_is_imported_by_the_code() -> None:
    imported = imported_modules(list(SRC.rglob("*.py")))
    declared = {**CORE, **SERVER_EXTRA}
    # uvicorn loads its WebSocket implementation by name: the HTTP door asks for it so.
    unused = [d for d, m in declared.items() if d != "websockets" and not provides(m, imported)]
    assert not unused
    assert 'ws="websockets-sansio"' in (SRC / "api" / "http.py").read_text()
    assert "pydantic-settings" not in {requirement(r)[0] for r in PROJECT["dependencies"]}


def test_the_client_side_imports_only_core_packages_and_the_standard_library() -> None:
    files = [p for pkg in CLIENT_SIDE for p in (SRC / pkg).rglob("*.py")]
    files += [SRC / name for name in CLIENT_SIDE_FILES]
    roots = {m.split(".")[0] for m in imported_modules(files)}
    third_party = roots - set(sys.stdlib_module_names) - {"tq"}
    # pydantic_core ships inside pydantic's own requirements, typing_extensions likewise.
    assert third_party <= {*CORE.values(), "pydantic_core"}, sorted(third_party)


def run_client_only(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT_ONLY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_client_only_install_imports_tq_its_client_worker_and_cli() -> None:
    code = (
        "import tq, tq.client, tq.worker, tq.worker.examples, tq.cli, tq.testing\n"
        "from tq.cli.main import cli\n"
        "print(tq.Client.__name__, tq.Worker.__name__, sorted(cli.commands)[:2])\n"
    )
    done = run_client_only("--no-uvloop", "-c", code)
    assert (done.returncode, done.stdout) == (0, "Client Worker ['bench', 'broker']\n"), done.stderr


def test_without_uvloop_the_event_loop_is_asyncio_s_own() -> None:
    code = (
        "import asyncio\n"
        "from tq import eventloop\n"
        "assert eventloop.loop_factory() is asyncio.new_event_loop\n"
        "async def main() -> str:\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "print(eventloop.run(main()))\n"
    )
    done = run_client_only("--no-uvloop", "-c", code)
    assert (done.returncode, done.stdout.strip()) == (0, "asyncio.unix_events"), done.stderr
    with_uvloop = run_client_only("-c", code.replace(" is asyncio.new_event_loop", " is not None"))
    assert (with_uvloop.returncode, with_uvloop.stdout.strip()) == (0, "uvloop"), with_uvloop.stderr
