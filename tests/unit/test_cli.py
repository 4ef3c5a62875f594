"""The ``tq`` command line, driven in-process through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tq.cli import cli
from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import WorkerId, make_task_id
from tq.core.machine import Machine
from tq.core.replies import ClaimReply
from tq.storage import open_store


def test_config_prints_the_effective_settings_with_overrides_applied() -> None:
    result = CliRunner().invoke(cli, ["--set", "broker.port=7555", "-o", "json", "config"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["broker"]["port"] == 7555
    assert data["broker"]["backpressure_threshold"] == 100_000


def test_inspect_counts_every_family_live_and_finished_by_state_and_queue(
    tmp_path: Path,
) -> None:
    m, fx = Machine(), Effects()
    tasks = tuple(
        c.NewTask(make_task_id(1_700_000_000_000, i), "echo", q, b"{}", p, 3)
        for i, (q, p) in enumerate(
            [("default", 10), ("default", 150), ("default", 250), ("default", 250)]
            + [("mail", 128)] * 4
        )
    )
    m.apply(c.SubmitTasks(1.0, tasks, 100), fx)
    m.apply(c.RegisterWorker(1.0, WorkerId("w"), "w", ("mail",), 4), fx)
    claimed = m.apply(c.ClaimTasks(2.0, WorkerId("w"), ("mail",), 3, 30.0), fx)
    assert isinstance(claimed, ClaimReply)
    done, dead, _running = claimed.tasks
    m.apply(c.CompleteTasks(3.0, (c.CompletedItem(done.id, done.lease_token, b"ok"),)), fx)
    m.apply(c.FailTasks(3.0, (c.FailedItem(dead.id, dead.lease_token, "no", retry=False),)), fx)
    m.apply(c.CancelTasks(3.0, (tasks[7].id,)), fx)
    m.end_batch(fx)
    with open_store(tmp_path) as store:
        store.write(fx.mutations, sync=True)
    result = CliRunner().invoke(cli, ["inspect", "--data-dir", str(tmp_path), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tasks"] == {
        "pending": 4,
        "scheduled": 0,
        "in_progress": 1,
        "completed": 1,
        "failed": 0,
        "dead_letter": 1,
        "cancelled": 1,
    }
    assert data["queues"]["default"] == {
        "high": 2, "normal": 1, "low": 1, "scheduled": 0, "in_progress": 0, "dead_letter": 0
    }  # fmt: skip
    assert data["queues"]["mail"] == {
        "high": 0, "normal": 0, "low": 0, "scheduled": 0, "in_progress": 1, "dead_letter": 1
    }  # fmt: skip
    assert data["totals"]["submitted"] == 8
    table = CliRunner().invoke(cli, ["inspect", "--data-dir", str(tmp_path)]).output
    for label in ("dead letter", "completed", "cancelled", "mail"):
        assert label in table


def test_inspect_of_a_missing_data_dir_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = CliRunner().invoke(cli, ["inspect", "--data-dir", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"error: no data directory at {missing} (from --data-dir)\n"
    assert not missing.exists()
