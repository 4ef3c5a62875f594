"""Every file of ``examples/`` runs against a real broker and workers, and the README shows
each one verbatim (so the documentation cannot drift from code that works)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cli_procs import REPO, child_env, worker
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLES = REPO / "examples"
SHOWN_IN_README = ("tasks.py", "quickstart.py", "raw_submit.py", "cli.sh")


# Two brokers: a worker claims every task of its queue, and fails those it has no handler for.
@pytest.fixture(scope="module")
def tasks_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker and a worker of examples.tasks (what `tq dev examples.tasks` runs)."""
    tmp = tmp_path_factory.mktemp("examples-tasks")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "examples.tasks", "examples-tasks", tmp / "worker.log"),
    ):
        yield broker.url


@pytest.fixture(scope="module")
def raw_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker and a worker of tq.worker.examples (what `tq dev` runs)."""
    tmp = tmp_path_factory.mktemp("examples-raw")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "tq.worker.examples", "examples-raw", tmp / "worker.log"),
    ):
        yield broker.url


def run(argv: list[str], url: str) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=child_env(url), cwd=REPO, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_quickstart_prints_the_results_and_the_remote_error(tasks_url: str) -> None:
    out = run([sys.executable, str(EXAMPLES / "quickstart.py")], tasks_url).splitlines()
    assert out[:2] == ["5", "49"]
    assert out[2].startswith("failed: ")
    assert "no luck" in out[2]
    assert len(out) == 3


def test_raw_submit_gets_the_payload_echoed(raw_url: str) -> None:
    assert run([sys.executable, str(EXAMPLES / "raw_submit.py")], raw_url) == '{"hello": "world"}\n'


def test_the_cli_session_runs_through(raw_url: str) -> None:
    out = run(["bash", str(EXAMPLES / "cli.sh")], raw_url)
    assert out.startswith('{"x": 1}\n')
    assert "bulk" in out
    assert "examples-raw" in out  # tq workers


def test_a_task_submitted_by_type_name_and_json_reaches_the_typed_function(
    tasks_url: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tq", "submit", "examples.add", '{"args": [2, 3]}', "--wait"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(tasks_url),
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "5\n"), done.stderr


@pytest.mark.parametrize("name", SHOWN_IN_README)
def test_the_readme_shows_the_example_verbatim(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    fence = "bash" if name.endswith(".sh") else "python"
    assert f"```{fence}\n{(EXAMPLES / name).read_text()}```" in readme, f"README lacks {name}"
