"""Real processes for the CLI and example tests: ``python -m tq ...`` runs, and workers.

Every wait polls a condition against a deadline; every child is stopped (SIGTERM, then
SIGKILL) by the context that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tq.client import Client

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
#: The venv's bin directory: where `tq` lives for scripts such as examples/cli.sh.
BIN = Path(sys.executable).parent


def child_env(url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child: this venv first on PATH, the repo root importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQ_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if url is not None:
        env["TQ_BROKER_URL"] = url
    # A broker's management front doors take free ports, so tests running side by side
    # never fight over the fixed defaults (8080, 50051, 9420).
    env.update(TQ_API__REST_PORT="0", TQ_API__GRPC_PORT="0", TQ_MONITORING__PROMETHEUS_PORT="0")
    env.update(extra)
    return env


def run_tq(
    *args: str,
    url: str | None,
    stdin: str | None = None,
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m tq ARGS`` to completion; the URL travels in TQ_BROKER_URL."""
    return subprocess.run(
        [sys.executable, "-m", "tq", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(url),
        cwd=cwd,
        check=False,
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something other than None, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.05)  # polling a condition with a deadline
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signal ``proc`` and reap it; SIGKILL if it outlives ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@contextmanager
def worker(
    url: str,
    modules: str | Sequence[str],
    name: str,
    log: Path,
    *,
    cwd: Path = REPO,
    queues: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``tq worker MODULE...`` child (of ``queues``, comma-separated, if given), yielded once
    the broker lists it as alive."""
    extra = ["--queues", queues] if queues else []
    served = [modules] if isinstance(modules, str) else list(modules)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tq", "--url", url, "worker", *served, "--name", name, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=cwd,
        )
        try:
            with Client(url) as client:

                def registered() -> bool | None:
                    if proc.poll() is not None:
                        raise AssertionError(f"worker exited: {log.read_text()[-2000:]}")
                    return any(w.name == name and w.alive for w in client.workers()) or None

                wait_for(f"worker {name} to register", registered)
            yield proc
        finally:
            stop(proc)
