"""``tq dev`` (what ``make run`` starts): a broker and one worker as child processes.

The children run in their own process groups, so a terminal's Ctrl-C reaches only this process;
it then stops them once each and in order: the worker first (it finishes or hands back its
tasks while the broker is still there), then the broker; SIGKILL after a timeout.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import click

from tq.cli.context import CliContext, fail
from tq.config import WorkerSettings

#: How long the broker may take to open its store and start listening.
READY_TIMEOUT_S = 30.0
#: Added to the configured shutdown timeouts before a child is killed.
GRACE_S = 5.0
_WILDCARDS = {"0.0.0.0", "::", ""}  # noqa: S104 - compared against, never bound


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line now rather than a traceback from the broker child later."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"cannot start the broker: {host}:{port} is in use ({exc.strerror}); "
                "stop the other broker or pick a port with --set broker.port=N"
            )


def _wait_ready(broker: subprocess.Popen[bytes], ready: Path, stop: threading.Event) -> int:
    """The port the broker listens on, once its ready file appears."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if ready.exists() and ready.stat().st_size > 0:
            return int(json.loads(ready.read_text())["port"])
        if broker.poll() is not None:
            fail(f"the broker exited with status {broker.returncode} before it was ready")
        stop.wait(0.05)
    if stop.is_set():
        return 0
    fail(f"the broker was not ready within {READY_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes], signum: int, timeout: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            click.echo(f"tq dev: pid {proc.pid} still up after {timeout:.0f} s, killing", err=True)
            proc.kill()
            proc.wait()
    return proc.returncode


def _hint(url: str, data_dir: Path, module: str, pids: tuple[int, int]) -> str:
    flag = "" if url == WorkerSettings().broker_url else f" --url {url}"
    return (
        f"tq dev: broker (pid {pids[0]}) at {url}, data in {data_dir}\n"
        f"        worker (pid {pids[1]}) running {module}\n"
        f"  try:  tq{flag} submit echo '{{\"x\": 1}}' --wait\n"
        f"        tq{flag} stats\n"
        "  stop: Ctrl-C"
    )


@click.command("dev")
@click.argument("module", default="tq.worker.examples")
@click.pass_obj
def dev_cmd(ctx: CliContext, module: str) -> None:
    """Run a broker and one worker of MODULE's handlers until Ctrl-C (or SIGTERM)."""
    settings = ctx.settings
    host, port = settings.broker.host, settings.broker.port
    _check_port_free(host, port)

    stop = threading.Event()
    received = [signal.SIGTERM]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received[0] = signal.Signals(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    base = [sys.executable, "-m", "tq", *ctx.global_args()]
    children: list[tuple[str, subprocess.Popen[bytes], float]] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="tq-dev-") as tmp:
        ready = Path(tmp) / "ready.json"
        data_dir = settings.persistence.data_dir
        try:
            broker = subprocess.Popen(
                [*base, "broker", "--data-dir", str(data_dir), "--ready-file", str(ready)],
                process_group=0,
            )
            children.append(("broker", broker, settings.broker.shutdown_timeout_s + GRACE_S))
            bound = _wait_ready(broker, ready, stop)
            if not stop.is_set():
                url = f"tq://{'127.0.0.1' if host in _WILDCARDS else host}:{bound}"
                worker = subprocess.Popen([*base, "--url", url, "worker", module], process_group=0)
                children.insert(0, ("worker", worker, settings.worker.shutdown_timeout_s + GRACE_S))
                click.echo(_hint(url, data_dir, module, (broker.pid, worker.pid)))
            while not stop.is_set():
                exited = [(name, p) for name, p, _ in children if p.poll() is not None]
                if exited:
                    name, proc = exited[0]
                    click.echo(f"error: the {name} exited with status {proc.returncode}", err=True)
                    status = 1
                    break
                stop.wait(0.2)
        finally:
            # Worker first, then broker: each signal once, each wait bounded.
            for name, proc, timeout in children:
                code = _stop(proc, received[0], timeout)
                if code not in (0, -signal.SIGTERM, -signal.SIGINT) and status == 0:
                    click.echo(f"tq dev: the {name} exited with status {code}", err=True)
                    status = 1
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    click.echo("tq dev: stopped", err=True)
    click.get_current_context().exit(status)
