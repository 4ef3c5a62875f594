"""A ``tq://`` URL that reaches something other than a broker's tq port: the REST port, another
server, or a plaintext broker behind ``tqs://``. Each is one line naming what answered."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import child_env, run_tq
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("wrong-port") / "data") as b:
        yield b


def test_the_rest_port_is_named_an_http_server_and_the_tq_port_is_pointed_to(
    broker: BrokerProcess,
) -> None:
    url = f"tq://127.0.0.1:{broker.ports['rest_port']}"
    done = run_tq("stats", url=url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: [PROTOCOL_ERROR] {url} answered like an HTTP server, not a tq broker: is that "
        "the REST port? the broker's tq port is broker.port (default 7420)\n"
    )


def test_tqs_to_a_plaintext_broker_says_it_serves_plaintext(broker: BrokerProcess) -> None:
    url = broker.url.replace("tq://", "tqs://")
    done = run_tq("stats", url=url)
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: [PROTOCOL_ERROR] {url}: no TLS handshake (")
    assert line.endswith(f"): this broker serves plaintext: use {broker.url}")


def test_a_worker_pointed_at_the_rest_port_exits_at_once_saying_why(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    url = f"tq://127.0.0.1:{broker.ports['rest_port']}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tq", "worker", "tq.worker.examples", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 30  # no retrying a server that is not a broker
    assert f"{url} answered like an HTTP server, not a tq broker" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def ssh_like_server() -> Iterator[int]:
    """A server that greets every connection as an SSH server does, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_another_kind_of_server_is_named_by_its_greeting(ssh_like_server: int) -> None:
    url = f"tq://127.0.0.1:{ssh_like_server}"
    done = run_tq("stats", url=url)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: [PROTOCOL_ERROR] {url} answered like an SSH server, not a tq broker: the "
        "broker's tq port is broker.port (default 7420)\n"
    )
