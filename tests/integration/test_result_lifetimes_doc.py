"""docs/result-lifetimes.md stays true: its example runs against a real broker and the worker
`make run` starts, the page shows that example verbatim, and the settings and totals it names
are the code's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cli_procs import REPO, child_env, worker
from tq.config import BrokerSettings
from tq.core.layout import Counters
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "examples" / "result_lifetimes.py"
DOC = (REPO / "docs" / "result-lifetimes.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker at its default settings and a worker of the examples' tasks."""
    tmp = tmp_path_factory.mktemp("lifetimes-doc")
    with (
        BrokerProcess(tmp / "data") as broker,
        worker(broker.url, "examples.tasks", "lifetimes-doc", tmp / "worker.log"),
    ):
        yield broker.url


def test_the_example_shows_results_deleted_after_their_ttl_and_a_task_expiring(url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, timeout=60, env=child_env(url), cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines() == [
        "result: 5",
        "completed, deleted 2 s later",
        "deleted: True",
        "dead_letter: no luck",
        "deleted: True",
        "cancelled: expired before it started",
        "results_expired: True expired: True",
    ]


def test_the_page_shows_the_example_verbatim() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC


def test_the_settings_and_totals_the_page_names_exist() -> None:
    for setting in ("default_result_ttl_s", "default_failure_ttl_s", "scheduler_interval_s"):
        assert f"broker.{setting}" in DOC
        assert setting in BrokerSettings.model_fields
    for total in ("results_expired", "expired", "cancelled", "purged"):
        assert f"`{total}`" in DOC
        assert total in Counters.__struct_fields__
