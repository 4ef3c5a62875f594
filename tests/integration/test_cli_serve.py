"""``tq broker`` and ``tq dev`` as real processes: logging, a busy port, start and stop."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.integration.cli_procs import BIN, child_env, free_port, run_tq, stop, wait_for

pytestmark = pytest.mark.timeout(120)


def test_tq_broker_logs_one_json_object_per_line_and_takes_global_options_anywhere(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.json"
    log = tmp_path / "broker.log"
    argv = ["--port", "0", "--data-dir", str(tmp_path / "d"), "--ready-file", str(ready)]
    argv += ["--log-format", "json", "--set", "broker.node_id=json-node"]
    with log.open("wb") as err:
        proc = subprocess.Popen([BIN / "tq-broker", *argv], stderr=err, env=child_env())
        try:
            wait_for("the ready file", lambda: (ready.exists() and ready.stat().st_size) or None)
            assert json.loads(ready.read_text())["port"] > 0
        finally:
            assert stop(proc) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    assert any(e["logger"] == "tq.broker.server" and "json-node" in e["msg"] for e in entries)


def test_the_entry_points_are_the_tq_commands() -> None:
    for script, usage in (
        ("tq-broker", "Usage: tq broker"),
        ("tq-worker", "Usage: tq worker"),
        ("tq-admin", "Usage: tq [OPTIONS] COMMAND"),
    ):
        done = subprocess.run(
            [BIN / script, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(usage)


def test_a_worker_of_a_missing_module_is_one_config_error_line() -> None:
    done = run_tq("worker", "no_such_module_here", url=f"tq://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: [CONFIG_ERROR]")
    assert "no_such_module_here" in line


def test_a_broker_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_tq("broker", "--port", str(port), "--data-dir", str(tmp_path), url=None)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use (try --port)"
    )
    assert "Traceback" not in done.stderr


def test_dev_refuses_a_busy_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_tq("--set", f"broker.port={port}", "dev", url=None, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot start the broker: 127.0.0.1:{port} is in use")
    assert not (tmp_path / ".tq-data").exists()


def test_dev_runs_a_broker_and_a_worker_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    url = f"tq://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "tq", "--set", f"broker.port={port}", "dev"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=tmp_path,
        )
        try:

            def stats_answer() -> bool | None:
                assert dev.poll() is None, log.read_text()
                done = run_tq("-o", "json", "stats", url=url)
                return (done.returncode == 0 and json.loads(done.stdout)["workers"] >= 1) or None

            wait_for("tq dev to serve with one worker", stats_answer, timeout=60)
            done = run_tq("submit", "echo", '{"x": 1}', "--wait", "--timeout-wait", "20", url=url)
            assert (done.returncode, done.stdout) == (0, '{"x": 1}\n'), done.stderr

        finally:
            status = stop(dev, signal.SIGINT, timeout=60)
    output = log.read_text()
    assert status == 0, output
    assert f"  TCP        {url}\n" in output
    assert "submit echo" in output
    assert (tmp_path / ".tq-data").is_dir()
    # Both children are gone (tq dev reaped them): their pids, from its hint, are free.
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]
    assert len(pids) == 2, output
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert run_tq("stats", url=url).returncode == 2


@pytest.mark.parametrize(
    ("argv", "env", "origin"),
    [
        (
            [str(BIN / "tq-broker"), "--port", "0", "--set", "api.dashboard_enabled=true"],
            {},
            "api.dashboard_enabled = 'true' from --set api.dashboard_enabled=true",
        ),
        (
            [sys.executable, "-m", "tq", "broker", "--port", "0"],
            {"TQ_API__DASHBOARD_ENABLED": "true"},
            "api.dashboard_enabled = 'true' from environment variable TQ_API__DASHBOARD_ENABLED",
        ),
        (
            [sys.executable, "-m", "tq", "--config", "tq.yml", "dev"],
            {},
            "api.dashboard_enabled = true from config file tq.yml line 2",
        ),
    ],
)
def test_a_setting_not_built_yet_stops_broker_and_dev_with_one_config_error_line(
    tmp_path: Path, argv: list[str], env: dict[str, str], origin: str
) -> None:
    (tmp_path / "tq.yml").write_text("api:\n  dashboard_enabled: true\n")
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(**env),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: [CONFIG_ERROR] invalid configuration: {origin}: ")
    assert "not available yet" in line
    assert "leave it at its default" in line
    assert not (tmp_path / ".tq-data").exists()  # refused before anything was started
