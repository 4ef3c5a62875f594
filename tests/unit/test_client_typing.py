"""The task decorator is typed with ParamSpec: mypy checks what ``.submit`` is given.

The first half of this module is checked by the project's own mypy run (strict); the test runs
mypy on a snippet of wrong calls and expects exactly the errors a user would see.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mypy import api

import tq

if TYPE_CHECKING:
    from tq.client import AsyncTaskFunction, SyncTaskFunction

    @tq.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    @tq.task("fetch", queue="io")
    async def fetch(url: str) -> bytes:
        return url.encode()

    def typed_usage() -> None:
        handle: tq.TaskHandle[int] = add.submit(1, y=2)
        total: int = handle.result(timeout=1.0)
        local: int = add(1, 2)
        urgent: SyncTaskFunction[[int, int], int] = add.options(priority=250, delay=1.0)
        del total, local, urgent

    async def typed_async_usage() -> None:
        handle: tq.AsyncTaskHandle[bytes] = await fetch.submit_async("https://example.com")
        body: bytes = await handle.result()
        local: bytes = await fetch("x")
        again: AsyncTaskFunction[[str], bytes] = fetch.options(queue="slow")
        del body, local, again


SNIPPET = """\
    import tq

    @tq.task
    def add(x: int, y: int) -> int:
        return x + y

    add.submit("two", 3)
    add.submit(1)
    add.submit(1, 2, z=3)
    add.options(priorty=3)
    reveal_type(add.submit(1, 2).result())
"""


@pytest.mark.timeout(120)
def test_mypy_checks_submitted_arguments_against_the_function_signature(tmp_path: Path) -> None:
    path = tmp_path / "usage.py"
    path.write_text(textwrap.dedent(SNIPPET))
    stdout, _, status = api.run(
        ["--strict", "--no-incremental", f"--cache-dir={tmp_path / 'cache'}", str(path)]
    )
    assert status == 1
    errors = {}
    notes = []
    for line in stdout.splitlines():
        if line.startswith(str(path)):
            where, kind, text = line.split(": ", 2)
            if kind == "error":
                errors[int(where.rsplit(":", 1)[1])] = text
            elif text.startswith("Revealed type"):
                notes.append(text)
    assert sorted(errors) == [7, 8, 9, 10], stdout
    assert '"str"; expected "int"  [arg-type]' in errors[7]
    assert 'Missing positional argument "y"' in errors[8]
    assert 'Unexpected keyword argument "z"' in errors[9]
    assert 'Unexpected keyword argument "priorty" for "options"' in errors[10]
    assert notes in (['Revealed type is "int"'], ['Revealed type is "builtins.int"'])
