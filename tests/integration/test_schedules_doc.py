"""docs/schedules.md stays true: its example runs against a real broker and worker (the worker
declares the ``@tq.periodic`` schedules, they fire and the worker runs the tasks; a worker
restarted declares them again without moving their next run times), the page shows the example
verbatim, and its tables name the settings, codes and commands the code has."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import REPO, child_env, wait_for, worker
from tq.client import Client
from tq.config import BrokerSettings
from tq.core.ids import format_task_id
from tq.errors import ErrorCode
from tq.protocol import ScheduleInfo
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "examples" / "schedules.py"
DOC = (REPO / "docs" / "schedules.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("sched-doc") / "data") as b:
        yield b


def test_the_worker_declares_the_periodic_tasks_and_runs_their_firings(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client(broker.url) as c:
        with worker(broker.url, "examples.schedules", "sched-doc-1", tmp_path / "w1.log"):

            def declared() -> dict[str, ScheduleInfo] | None:
                names = {s.name: s for s in c.list_schedules()}
                return names if {"examples.tick", "weekday-report"} <= set(names) else None

            names = wait_for("the declared schedules", declared)
            report = names["weekday-report"]
            assert (report.cron, report.timezone, report.task_type) == (
                "0 7 * * 1-5", "Europe/Berlin", "examples.report",
            )  # fmt: skip

            def ticks_done() -> int | None:
                done, _ = c.list_tasks(task_type="examples.tick", state="completed")
                return len(done) if len(done) >= 2 else None

            wait_for("two ticks run by the worker", ticks_done, timeout=30)
        # Declared again by a new worker: the unchanged definitions keep their times.
        log = tmp_path / "w2.log"
        with worker(broker.url, "examples.schedules", "sched-doc-2", log):
            wait_for(
                "the second worker's declaration",
                lambda: "schedule.declared name=weekday-report" in log.read_text() or None,
            )
            again = c.get_schedule("weekday-report")
            assert again.next_at == report.next_at and again.updated_at == report.updated_at
            assert again.created_at == report.created_at
        (done, *_) = c.list_tasks(task_type="examples.tick", state="completed")[0]
        assert c.result(format_task_id(done.id)) == b'"tick"'


def test_the_example_script_adds_a_schedule_and_prints_next_run_times(
    broker: BrokerProcess,
) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True, text=True, timeout=60, env=child_env(broker.url), cwd=REPO,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("nightly-cleanup: examples.report next at ") for line in lines)
    with Client(broker.url) as c:
        nightly = c.get_schedule("nightly-cleanup")
    assert (nightly.cron, nightly.missed) == ("30 2 * * *", "once")


def test_the_page_shows_the_example_verbatim() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC


def test_the_page_names_the_settings_and_codes_the_code_has() -> None:
    for setting in ("schedule_misfire_grace_s", "schedule_catch_up_max", "scheduler_interval_s"):
        assert f"broker.{setting}" in DOC
        assert setting in BrokerSettings.model_fields
    defaults = BrokerSettings()
    assert f"(default {defaults.schedule_misfire_grace_s:g} s)" in DOC
    assert f"(default {defaults.schedule_catch_up_max})" in DOC
    for code in (ErrorCode.SCHEDULE_ALREADY_EXISTS, ErrorCode.SCHEDULE_NOT_FOUND):
        assert f"`{code.name}` ({code.value}; HTTP {code.http_status})" in DOC
