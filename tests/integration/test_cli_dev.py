"""``tq dev`` as a newcomer meets it: its options, the addresses its banner prints (each one
answers), and the commands it suggests, run as typed in a shell without the venv on PATH."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2
from websockets.sync.client import connect

from tests.integration.cli_procs import BIN, REPO, child_env, free_port, run_tq, stop, wait_for
from tq.client import Client

pytestmark = pytest.mark.timeout(180)


def without_venv(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this venv's bin dir off PATH: `make run` never puts it there."""
    dirs = env["PATH"].split(os.pathsep)
    return {**env, "PATH": os.pathsep.join(d for d in dirs if Path(d) != BIN)}


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    data_dir: Path

    def output(self) -> str:
        return self.log.read_text()

    def banner(self) -> dict[str, list[str]]:
        """Banner rows by label ("TCP", "REST", ..., "try:"); continuation lines join the last."""
        rows: dict[str, list[str]] = {}
        label = ""
        for line in self.output().splitlines():
            row = re.fullmatch(r"  (\S+)?\s+(.+)", line)
            if row is None or line.startswith("        worker"):
                continue
            label = row.group(1) or label
            rows.setdefault(label, []).append(row.group(2).strip())
        return rows


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`tq dev --port N --data-dir D --workers 2 examples.tasks tq.worker.examples`, started
    from the repository root like `make run` (doors on free ports)."""
    tmp = tmp_path_factory.mktemp("dev")
    port = free_port()
    data_dir = tmp / "data"
    log = tmp / "dev.log"
    argv = ["dev", "--port", str(port), "--data-dir", str(data_dir), "--workers", "2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tq", *argv, "examples.tasks", "tq.worker.examples"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=without_venv(child_env()),
            cwd=REPO,
        )
    url = f"tq://127.0.0.1:{port}"
    dev = Dev(proc, log, url, data_dir)
    try:
        with Client(url) as client:

            def both_workers() -> bool | None:
                assert proc.poll() is None, dev.output()
                return (len([w for w in client.workers() if w.alive]) == 2) or None

            wait_for("tq dev's banner and its two workers", both_workers, timeout=90)
        wait_for("the banner", lambda: "stop:" in dev.output() or None)
        yield dev
    finally:
        status = stop(proc, signal.SIGINT, timeout=60)
        assert status == 0, dev.output()
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", dev.output())]
        assert len(pids) == 3, dev.output()  # the broker and two workers, all reaped
        assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_the_options_took_effect(dev: Dev) -> None:
    assert dev.banner()["TCP"] == [dev.url]
    assert (dev.data_dir / "CURRENT").is_file()  # RocksDB's, where --data-dir said
    served = re.findall(r"worker \(pid \d+\) of examples.tasks, tq.worker.examples", dev.output())
    assert len(served) == 2


def test_every_address_of_the_banner_answers(dev: Dev) -> None:
    rows = dev.banner()
    rest = rows["REST"][0].split()[0]
    assert httpx.get(f"{rest}/stats", timeout=10).json()["workers"] == 2
    docs = httpx.get(rows["docs"][0], timeout=10)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    with connect(rows["WebSocket"][0], open_timeout=10) as ws:
        ws.send(json.dumps({"op": "ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"
    with grpc.insecure_channel(rows["gRPC"][0]) as channel:
        # The typeshed HealthStub declares no methods: call the standard method by its path.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply = check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    metrics = httpx.get(rows["metrics"][0], timeout=10)
    assert metrics.status_code == 200
    assert "tq_broker_queue_depth" in metrics.text
    assert rows["dashboard"] == ["not built yet"]


def test_the_suggested_commands_work_as_typed_without_the_venv_on_path(dev: Dev) -> None:
    lines = [line for line in dev.banner()["try:"] if not line.startswith("(or ")]
    assert any("examples/quickstart.py" in line for line in lines)
    outputs = []
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=60, cwd=REPO,
            env=without_venv({k: v for k, v in child_env().items() if k != "TQ_BROKER_URL"}),
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr}"
        outputs.append(done.stdout)
    assert outputs[0] == '{"x": 1}\n'  # echo, of tq.worker.examples
    assert outputs[-1].splitlines()[:2] == ["5", "49"]  # quickstart, of examples.tasks


def test_a_module_that_does_not_import_stops_dev_with_the_worker_s_error(tmp_path: Path) -> None:
    done = run_tq("dev", "--port", "0", "--data-dir", str(tmp_path / "d"), "no_such_mod_xyz",
                  url=None, cwd=tmp_path, timeout=90)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "[CONFIG_ERROR] cannot import handlers module 'no_such_mod_xyz'" in done.stderr
    assert "error: the worker exited with status 2" in done.stderr


def test_a_port_out_of_range_is_one_config_error_line(tmp_path: Path) -> None:
    done = run_tq("dev", "--port", "70000", url=None, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: [CONFIG_ERROR] invalid configuration: broker.port = 70000")
    assert not list(tmp_path.iterdir())
