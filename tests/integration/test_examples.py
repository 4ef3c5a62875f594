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


#: What `make run` serves (the Makefile's RUN_MODULES): the typed tasks and the raw handlers.
MAKE_RUN_MODULES = ("examples.tasks", "tq.worker.examples")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker and a worker of what `make run` serves."""
    tmp = tmp_path_factory.mktemp("examples")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, MAKE_RUN_MODULES, "examples-worker", tmp / "worker.log"),
    ):
        yield broker.url


def test_the_makefile_serves_these_modules() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert f"RUN_MODULES := {' '.join(MAKE_RUN_MODULES)}\n" in makefile
    assert "$(BIN)/tq dev $(RUN_MODULES)" in makefile


def run(argv: list[str], url: str) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=child_env(url), cwd=REPO, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_quickstart_prints_the_results_and_the_remote_error(url: str) -> None:
    out = run([sys.executable, str(EXAMPLES / "quickstart.py")], url).splitlines()
    assert out[:2] == ["5", "49"]
    assert out[2].startswith("failed: ")
    assert "no luck" in out[2]
    assert len(out) == 3


def test_raw_submit_gets_the_payload_echoed(url: str) -> None:
    assert run([sys.executable, str(EXAMPLES / "raw_submit.py")], url) == '{"hello": "world"}\n'


def test_the_cli_session_runs_through(url: str) -> None:
    out = run(["bash", str(EXAMPLES / "cli.sh")], url)
    assert out.startswith('{"x": 1}\n')
    assert "bulk" in out
    assert "examples-worker" in out  # tq workers


def test_a_task_submitted_by_type_name_and_json_reaches_the_typed_function(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tq", "submit", "examples.add", '{"args": [2, 3]}', "--wait"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(url),
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "5\n"), done.stderr


@pytest.mark.parametrize("name", SHOWN_IN_README)
def test_the_readme_shows_the_example_verbatim(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    fence = "bash" if name.endswith(".sh") else "python"
    assert f"```{fence}\n{(EXAMPLES / name).read_text()}```" in readme, f"README lacks {name}"
