"""docs/workers.md stays true: its example runs against a real broker and worker, the page
shows it verbatim, and its tables name the routes, rpcs and CLI commands that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cli_procs import REPO, child_env, worker
from tq.api._pb import tq_pb2
from tq.api.rest_workers import router
from tq.cli.workers import workers_group
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "examples" / "workers.py"
DOC = (REPO / "docs" / "workers.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker and a worker of tq.worker.examples (what `tq dev` runs)."""
    tmp = tmp_path_factory.mktemp("workers-doc")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "tq.worker.examples", "doc-worker", tmp / "worker.log"),
    ):
        yield broker.url


def test_the_example_steers_a_worker_onto_a_queue_and_back(url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, timeout=90, env=child_env(url), cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "doc-worker: consumes default; runs 0 tasks, reserved 0",
        "doc-worker: consumes default,reports",
        "reports: hello",
        "doc-worker: consumes default",
    ], done.stdout


def test_the_page_shows_the_example_verbatim() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC


def test_the_rest_and_grpc_table_names_what_exists() -> None:
    table = DOC.split("## Over REST and gRPC\n\n", 1)[1].split("\n\n", 1)[0]
    routes = set(re.findall(r"`(GET|POST) (/v1/workers[^`]*)`", table))
    served = {
        (method, path)
        for r in router.routes
        for method in getattr(r, "methods", ())
        for path in [getattr(r, "path", "").replace("{worker_id}", "{id}")]
    }
    assert routes - {("GET", "/v1/workers")} == served
    rpcs = set(re.findall(r"\| `(\w+)` \|", table))
    assert rpcs <= set(tq_pb2.DESCRIPTOR.services_by_name["TaskQueue"].methods_by_name)
    assert {"InspectWorker", "ShutdownWorker", "ConsumeQueue", "StopConsuming"} <= rpcs


def test_the_cli_forms_shown_are_the_commands_of_tq_workers() -> None:
    shown = set(re.findall(r"^tq workers ([a-z-]+) ID", DOC, re.MULTILINE))
    assert shown == set(workers_group.commands)
