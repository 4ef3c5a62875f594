"""A client-only install (no ``server`` extra, and no uvloop) submits, waits and runs a worker
against a real broker; the commands that need a broker of their own say so in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import REPO, child_env, stop, wait_for
from tq.cli.extras import SERVER_EXTRA
from tq.client import Client
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

CLIENT_ONLY = [sys.executable, str(REPO / "tests" / "client_only.py"), "--no-uvloop", "-m", "tq"]


def client_only(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLIENT_ONLY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(url),
        check=False,
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("client-only") / "data") as b:
        yield b


def test_a_client_only_worker_runs_what_a_client_only_cli_submits(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    argv = [*CLIENT_ONLY, "worker", "tq.worker.examples", "--name", "client-only", "-Q", "co"]
    with log.open("wb") as out:
        worker = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(broker.url)
        )
        try:
            with Client(broker.url) as client:

                def registered() -> bool | None:
                    assert worker.poll() is None, log.read_text()
                    return (
                        any(w.name == "client-only" and w.alive for w in client.workers()) or None
                    )

                wait_for("the client-only worker to register", registered)
            done = client_only(
                "submit", "echo", '{"co": 1}', "--queue", "co", "--wait", url=broker.url
            )
            assert (done.returncode, done.stdout) == (0, '{"co": 1}\n'), done.stderr
        finally:
            assert stop(worker) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("argv", "does"),
    [
        (["broker", "--port", "0"], "`tq broker` runs a broker"),
        (["dev"], "`tq dev` runs a broker"),
        (["bench", "--scenario", "enqueue"], "`tq bench` starts its own brokers (unless --url)"),
        (["inspect", "--data-dir", "nowhere"], "`tq inspect` opens a broker's data dir"),
    ],
)
def test_a_server_command_without_the_server_extra_is_one_line_saying_what_to_install(
    argv: list[str], does: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [*CLIENT_ONLY, *argv], capture_output=True, text=True, timeout=60,
        env=child_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    missing = ", ".join(SERVER_EXTRA)
    assert done.stderr == (
        f"error: {does}, which needs the server extra (missing: {missing}): "
        "pip install 'tq[server]'\n"
    )
    assert not list(tmp_path.iterdir())  # nothing started, no data dir made
