"""docs/flow-control.md stays true: its example runs against a real broker and worker (as
`tq dev tq.worker.examples` serves them) and prints what the page says, the page shows the
example verbatim, and every CLI line and REST route it names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cli_procs import REPO, child_env, run_tq, worker
from tq.api.rest_flow import router
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "examples" / "flow_control.py"
DOC = (REPO / "docs" / "flow-control.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("flow-doc")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "tq.worker.examples", "flow-doc", tmp / "worker.log"),
    ):
        yield broker.url


def printed() -> list[str]:
    """The output the page shows for the example."""
    block = DOC.split("```text\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def test_the_example_prints_what_the_page_shows(url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, timeout=60, env=child_env(url), cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    timing = re.compile(r"6 echoed in (\d+\.\d) s \(2 at once, then 2 a second: about 2 s\)")
    expected = printed()
    assert len(lines) == len(expected)
    for got, shown in zip(lines, expected, strict=True):
        if timing.fullmatch(shown):  # the time varies: within what the rate allows
            m = timing.fullmatch(got)
            assert m is not None, got
            assert 1.9 <= float(m[1]) < 10, got  # never faster than the rate allows
        else:
            assert got == shown


def test_the_page_shows_the_example_verbatim() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC


def test_every_cli_line_of_the_page_parses() -> None:
    block = DOC.split("```bash\n", 1)[1].split("```", 1)[0]
    for line in block.splitlines():
        argv = line.split("#", 1)[0].split()
        assert argv[0] == "tq"
        # --help after the arguments: click parses them, then prints help instead of running.
        done = run_tq(*argv[1:], "--help", url=None)
        assert done.returncode == 0, (line, done.stderr)


def test_every_rest_route_of_the_page_exists() -> None:
    routes = {getattr(r, "path", "") for r in router.routes}
    named = set(re.findall(r"`(?:GET|POST|PUT|DELETE) (/v1/[^`]+)`", DOC))
    named = {p.replace("{q}", "{queue}").replace("{t}", "{task_type}") for p in named}
    named |= {"/v1/limits/queues/{queue}"}  # written `queues/{q}` after its type twin
    assert named <= routes, named - routes
