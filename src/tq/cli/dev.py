"""``tq dev`` (what ``make run`` starts): a broker and its workers as child processes.

The children run in their own process groups, so a terminal's Ctrl-C reaches only this process;
it then stops them once each and in order: the workers first (it finishes or hands back its
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
from tq.cli.devbanner import RAW_EXAMPLES, Commands, dial_host, render
from tq.cli.extras import require_server

#: How long the broker may take to open its store and start listening.
READY_TIMEOUT_S = 30.0
#: Added to the configured shutdown timeouts before a child is killed.
GRACE_S = 5.0


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
                "stop the other broker or pick another with --port N"
            )


def _wait_ready(
    broker: subprocess.Popen[bytes], ready: Path, stop: threading.Event
) -> dict[str, int]:
    """The ports the broker listens on (TCP ``port``, ``rest_port``, ``grpc_port``,
    ``metrics_port`` of the doors enabled), once its ready file appears."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if ready.exists() and ready.stat().st_size > 0:
            found = json.loads(ready.read_text())
            return {k: int(v) for k, v in found.items() if k == "port" or k.endswith("_port")}
        if broker.poll() is not None:
            fail(f"the broker exited with status {broker.returncode} before it was ready")
        stop.wait(0.05)
    if stop.is_set():
        return {}
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


@click.command("dev")
@click.argument("modules", nargs=-1, metavar="[MODULE]...")
@click.option("--port", type=int, help="Broker TCP port; 0 picks a free one. Default: broker.port.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Default: persistence.data_dir.")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each serving every MODULE.",
)
@click.pass_obj
def dev_cmd(
    ctx: CliContext, modules: tuple[str, ...], port: int | None, data_dir: str | None, workers: int
) -> None:
    """Run a broker and workers of the MODULEs' handlers until Ctrl-C (or SIGTERM).

    MODULE defaults to tq.worker.examples (echo, sleep, json); several are served together
    (`make run` serves examples.tasks and tq.worker.examples).
    """
    require_server("dev")
    served = list(modules) or [RAW_EXAMPLES]
    flags = {"broker.port": port, "persistence.data_dir": data_dir}
    settings = ctx.reload({k: v for k, v in flags.items() if v is not None})
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
        data = str(settings.persistence.data_dir)
        try:
            argv = [*base, "broker", "--port", str(port), "--data-dir", data]
            broker = subprocess.Popen([*argv, "--ready-file", str(ready)], process_group=0)
            children.append(("broker", broker, settings.broker.shutdown_timeout_s + GRACE_S))
            ports = _wait_ready(broker, ready, stop)
            if not stop.is_set():
                scheme = "tqs" if settings.auth.tls_enabled else "tq"
                url = f"{scheme}://{dial_host(host)}:{ports['port']}"
                grace = settings.worker.shutdown_timeout_s + GRACE_S
                pids = []
                for _ in range(workers):
                    argv = [*base, "--url", url, "worker", *served]
                    worker = subprocess.Popen(argv, process_group=0)
                    children.insert(0, ("worker", worker, grace))
                    pids.append(worker.pid)
                cwd = Path.cwd()
                cmds = Commands.here(cwd)
                banner = render(settings, url, ports, served, (broker.pid, pids), cwd, cmds)
                click.echo(banner)
            while not stop.is_set():
                exited = [(name, p) for name, p, _ in children if p.poll() is not None]
                if exited:
                    name, proc = exited[0]
                    click.echo(f"error: the {name} exited with status {proc.returncode}", err=True)
                    status = 1
                    break
                stop.wait(0.2)
        finally:
            # Workers first, then the broker: each signal once, each wait bounded.
            for name, proc, timeout in children:
                code = _stop(proc, received[0], timeout)
                if code not in (0, -signal.SIGTERM, -signal.SIGINT) and status == 0:
                    click.echo(f"tq dev: the {name} exited with status {code}", err=True)
                    status = 1
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    click.echo("tq dev: stopped", err=True)
    click.get_current_context().exit(status)
