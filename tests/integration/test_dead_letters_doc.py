"""docs/dead-letters.md stays true: its two examples run against a real broker and a worker
of tq.worker.examples, the page shows both verbatim, and it names every command and client
method it documents as they are in the code."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cli_procs import REPO, child_env, worker
from tq.cli import bulk
from tq.client import AsyncClient, Client
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

PY_EXAMPLE = REPO / "examples" / "dead_letters.py"
SH_EXAMPLE = REPO / "examples" / "dead_letters.sh"
DOC = (REPO / "docs" / "dead-letters.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dl-doc")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "tq.worker.examples", "dl-doc", tmp / "worker.log"),
    ):
        yield broker.url


def run(argv: list[str], url: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=child_env(url), cwd=REPO,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_the_python_example_fails_inspects_retries_and_deletes(url: str) -> None:
    lines = run([sys.executable, str(PY_EXAMPLE)], url).stdout.splitlines()
    assert len(lines) == 8, lines
    assert all(
        line.startswith("dead_letter after 1 attempt: Reject: payload is not valid JSON")
        for line in lines[:3]
    ), lines
    assert lines[3:7] == [
        "retried: dead_letter again", "  retry: 3 done, 0 not", "retried 3", "deleted 3",
    ]  # fmt: skip
    assert re.fullmatch(r"gone: no task with id [0-9a-f-]{36}", lines[7]), lines[7]


def test_the_shell_session_runs_every_step(url: str) -> None:
    out = run(["bash", str(SH_EXAMPLE)], url).stdout
    assert out.startswith("exit 1: rejected, so in dead letter at once\n")
    assert "dead letters (1)" in out
    assert "Reject: payload is not valid JSON" in out
    assert "retried 1 task (state=dead_letter, task_type=json)\n" in out
    assert re.search(r"deleted [12] tasks? \(task_type=json, state=dead_letter\)\n", out), out


def test_the_page_shows_both_examples_verbatim() -> None:
    assert f"```python\n{PY_EXAMPLE.read_text()}```" in DOC
    assert f"```bash\n{SH_EXAMPLE.read_text()}```" in DOC


def test_the_page_names_the_commands_and_methods_as_the_code_has_them() -> None:
    for command in (bulk.retry_cmd, bulk.delete_cmd, bulk.purge_cmd, bulk.dead_letters_cmd):
        assert f"tq {command.name}" in DOC, command.name
    methods = ("retry", "retry_many", "delete", "delete_many", "retry_where", "delete_where",
               "cancel_where")  # fmt: skip
    for name in methods:
        assert f"`{name}(" in DOC, name
        assert callable(getattr(Client, name)) and callable(getattr(AsyncClient, name))
    assert str(bulk.SHOWN_FAILURES) in DOC
