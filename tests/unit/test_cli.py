"""The ``tq`` command line, driven in-process through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tq.cli import cli
from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import make_task_id
from tq.core.machine import Machine
from tq.storage import open_store


def test_config_prints_the_effective_settings_with_overrides_applied() -> None:
    result = CliRunner().invoke(cli, ["--set", "broker.port=7555", "-o", "json", "config"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["broker"]["port"] == 7555
    assert data["broker"]["backpressure_threshold"] == 100_000


def test_inspect_rebuilds_the_state_held_in_a_data_dir(tmp_path: Path) -> None:
    m, fx = Machine(), Effects()
    tasks = tuple(
        c.NewTask(make_task_id(1_700_000_000_000, i), "echo", "default", b"{}", p, 3)
        for i, p in enumerate((10, 150, 250, 250))
    )
    m.apply(c.SubmitTasks(1.0, tasks, 100), fx)
    m.end_batch(fx)
    with open_store(tmp_path) as store:
        store.write(fx.mutations, sync=True)
    result = CliRunner().invoke(cli, ["-o", "json", "inspect", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["live"]["pending"] == 4
    assert data["queues"]["default"] == {"low": 1, "normal": 1, "high": 2}
    assert data["totals"]["submitted"] == 4
