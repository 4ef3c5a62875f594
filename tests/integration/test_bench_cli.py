"""``tq bench`` end to end, small: real broker and worker processes, JSON out.

Checks that every figure is there and no task was lost; never how fast anything was
(benchmarks are not tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.cli_procs import child_env
from tq.bench.report import FIGURES, SCHEMA, TARGETS

pytestmark = pytest.mark.timeout(240)

SCENARIOS = ("enqueue", "drain", "latency")
TASKS = 2000


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    argv = [sys.executable, "-m", "tq", "bench", "--scenario", ",".join(SCENARIOS),
            "--tasks", str(TASKS), "--latency-count", "200", "--json", "--no-progress"]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=200, env=child_env(), check=False
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "Traceback" not in done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_the_result_names_its_schema_configuration_and_host(result: dict[str, Any]) -> None:
    assert result["schema"] == SCHEMA
    assert result["config"]["tasks"] == TASKS
    assert result["config"]["scenarios"] == list(SCENARIOS)
    assert result["host"]["cpus"] >= 1
    assert result["versions"]["tq"]
    assert result["errors"] == {}
    assert result["skipped"] == []
    assert result["ok"] is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_figure_of_a_scenario_is_measured(result: dict[str, Any], scenario: str) -> None:
    figures = result["scenarios"][scenario]
    missing = [f.key for f in FIGURES[scenario] if figures.get(f.key) is None]
    assert missing == []


def test_nothing_was_lost(result: dict[str, Any]) -> None:
    enqueue, drain, latency = (result["scenarios"][s] for s in SCENARIOS)
    assert enqueue["submitted"] == 3 * TASKS  # single, submit_nowait, batches
    assert enqueue["lost"] == 0
    for phase in ("single_submit", "nowait_submit"):
        assert enqueue[f"{phase}_count"] == TASKS  # one ack latency per task
    assert drain["completed"] == TASKS
    assert drain["lost"] == 0
    assert drain["timed_out"] is False
    assert drain["pending_after"] == 0
    assert drain["in_progress_after"] == 0
    assert drain["dead_lettered"] == 0
    assert latency["failed"] == 0
    assert latency["e2e_count"] == 200


def test_the_targets_of_the_measured_scenarios_are_judged(result: dict[str, Any]) -> None:
    judged = {r["figure"].split(".")[0] for r in result["targets"] if r["met"] is not None}
    assert judged == set(SCENARIOS)
    assert len(result["targets"]) == len(TARGETS)


def test_progress_on_a_stderr_that_is_not_a_terminal_is_plain_lines() -> None:
    argv = [sys.executable, "-m", "tq", "bench", "--scenario", "latency", "--latency-count",
            "50", "--progress", "-o", "json"]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=200, env=child_env(), check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["scenarios"]["latency"]["e2e_count"] == 50
    lines = done.stderr.splitlines()
    assert any(line.startswith("tq bench: latency") for line in lines), done.stderr
    assert "\x1b[" not in done.stderr
