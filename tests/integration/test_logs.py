"""``--log-format json`` on real processes: a broker (with its metrics door) and a worker run
a task and meet a misbehaving peer; every line either writes to stderr is one JSON object."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_procs import child_env, run_tq, stop, wait_for

pytestmark = pytest.mark.timeout(120)

STANDARD = {"ts", "level", "logger", "msg"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    assert lines, f"{path.name} is empty"
    entries = []
    for line in lines:
        entry = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(entry, dict)
        assert entry.keys() >= STANDARD, line
        entries.append(entry)
    return entries


def events(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last entry of each event name."""
    return {e["event"]: e for e in entries if "event" in e}


def test_broker_and_worker_write_one_json_object_per_stderr_line(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    broker_log, worker_log = tmp_path / "broker.err", tmp_path / "worker.err"
    argv = [sys.executable, "-m", "tq", "--set", "monitoring.prometheus_enabled=true"]
    argv += ["--set", "monitoring.prometheus_port=0"]
    argv += ["--set", "api.rest_enabled=false", "--set", "api.websocket_enabled=false"]
    argv += ["--set", "api.grpc_enabled=false"]
    argv += ["broker", "--port", "0", "--data-dir", str(tmp_path / "d")]
    argv += ["--ready-file", str(ready), "--log-format", "json", "--log-level", "DEBUG"]
    with broker_log.open("wb") as err:
        broker = subprocess.Popen(argv, stderr=err, env=child_env())
        try:
            wait_for("the ready file", lambda: (ready.exists() and ready.stat().st_size) or None)
            info = json.loads(ready.read_text())
            url = f"tq://127.0.0.1:{info['port']}"
            with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as bad:
                bad.sendall(b"\xff" * 64)  # not a frame: the broker logs and hangs up
                bad.settimeout(10)
                while bad.recv(4096):
                    pass
            done = run_tq("submit", "echo", '"hi"', url=url)
            assert done.returncode == 0, done.stderr
            with worker_log.open("wb") as werr:
                worker = subprocess.run(
                    [sys.executable, "-m", "tq", "--url", url, "worker", "tq.worker.examples",
                     "--burst", "--log-format", "json", "--log-level", "DEBUG"],
                    stderr=werr, env=child_env(), timeout=60, check=False,
                )  # fmt: skip
            assert worker.returncode == 0, worker_log.read_text()
        finally:
            assert stop(broker, signal.SIGTERM) == 0

    broker_events = events(json_lines(broker_log))
    listening = broker_events["broker.listening"]
    assert listening["port"] == info["port"]  # a number, not text
    assert listening["logger"] == "tq.broker.server"
    assert broker_events["api.listening"]["name"] == "metrics"
    assert broker_events["api.listening"]["port"] == info["metrics_port"]
    assert broker_events["connection.protocol_error"]["level"] == "WARNING"
    assert "peer" in broker_events["connection.protocol_error"]
    assert {"broker.recovered", "broker.stopping", "broker.stopped"} <= broker_events.keys()

    worker_events = events(json_lines(worker_log))
    assert worker_events["task.completed"]["type"] == "echo"
    assert isinstance(worker_events["task.completed"]["elapsed"], float)
    assert worker_events["worker.stopped"]["completed"] == 1
