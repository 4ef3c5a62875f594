"""The processes a bench run drives: a fresh broker per scenario, worker processes, and
psutil sampling of their memory and CPU.

Every child is tracked by its PID and stopped by it (SIGTERM, then SIGKILL after a grace
period); nothing is ever stopped by name. Scratch (data dirs, logs) lives in one temp dir.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from tq.bench.config import QUEUE, BenchConfig
from tq.client import AsyncClient, TlsConfig
from tq.errors import UnavailableError
from tq.testing import BrokerProcess, BrokerTls

MiB = 1024 * 1024
#: Module the bench workers serve (its ``noop`` handler).
TASKS_MODULE = "tq.bench.tasks"


@dataclass
class Target:
    """Where a scenario runs: a broker URL, when the bench spawned it the process, and for a
    ``tqs://`` broker what its clients and workers verify it with."""

    url: str
    broker: BrokerProcess | None
    workdir: Path
    api_key: str | None = None  #: what the bench's clients and workers present
    tls: TlsConfig | None = None

    def client(self, url: str | None = None) -> AsyncClient:
        """A client of this target's broker (or of ``url``, a restarted one) presenting the
        bench's key and verifying the broker's TLS."""
        return AsyncClient(url or self.url, api_key=self.api_key, tls=self.tls)

    @property
    def broker_pid(self) -> int | None:
        proc = self.broker.proc if self.broker is not None else None
        return None if proc is None else proc.pid


#: The management front doors (REST, gRPC, Prometheus) stay on, as in a default broker, but
#: on ports the OS picks, so a bench broker never collides with one already running here.
EPHEMERAL_PORTS: Final = {
    "api.rest_port": "0",
    "api.grpc_port": "0",
    "monitoring.prometheus_port": "0",
}


def broker_settings(cfg: BenchConfig) -> dict[str, object]:
    """Settings of a spawned broker: the defaults (fsync durability) except backpressure,
    raised so that the pending depth a scenario builds is not refused, and the front doors'
    ports (ephemeral); ``--set`` overrides win."""
    depth = max(cfg.tasks * 3, cfg.stored_tasks, int(cfg.rate * cfg.duration)) * 2
    settings: dict[str, object] = {"broker.backpressure_threshold": max(100_000, depth)}
    settings.update(EPHEMERAL_PORTS)
    settings.update(dict(cfg.broker_settings))
    return settings


def broker_tls(settings: Mapping[str, object]) -> BrokerTls | None:
    """The TLS of a broker spawned with ``settings`` (``--set auth.tls_cert_file=...``), its
    clients verifying it against ``worker.tls_ca_file``; None: plaintext."""
    cert, key = settings.get("auth.tls_cert_file"), settings.get("auth.tls_key_file")
    if not cert or not key:
        return None
    ca = settings.get("worker.tls_ca_file")
    return BrokerTls(str(cert), str(key), ca_file=str(ca) if ca else None)


def external_tls(url: str, settings: Mapping[str, object]) -> TlsConfig | None:
    """What the bench verifies an existing ``tqs://`` broker with: ``worker.tls_ca_file`` from
    ``--set``, else the system's CAs."""
    if not url.startswith("tqs://"):
        return None
    ca = settings.get("worker.tls_ca_file")
    return TlsConfig(ca_file=str(ca) if ca else None)


@contextmanager
def fresh_broker(
    settings: Mapping[str, object], workdir: Path, name: str, api_key: str | None = None
) -> Iterator[Target]:
    """A broker on a free port with an empty data dir under ``workdir``; stopped and its data
    removed on exit. ``api_key``: its bootstrap admin key (when settings enable auth)."""
    base = workdir / name
    broker = BrokerProcess(
        base / "data", settings=settings, log_file=base / "broker.log", tls=broker_tls(settings)
    )
    broker.env["PYTHONUNBUFFERED"] = "1"
    if api_key is not None:
        broker.env["TQ_BOOTSTRAP_API_KEY"] = api_key
    broker.start()
    try:
        yield Target(broker.url, broker, base, api_key, broker.client_tls())
    finally:
        broker.stop()
        shutil.rmtree(base / "data", ignore_errors=True)


def worker_argv(url: str, concurrency: int, tls: TlsConfig | None = None) -> list[str]:
    sets = [f"worker.broker_url={url}"]
    if tls is not None and tls.ca_file is not None:
        sets.append(f"worker.tls_ca_file={os.fspath(tls.ca_file)}")
    return [
        sys.executable, "-m", "tq", *(a for s in sets for a in ("--set", s)), "worker",
        TASKS_MODULE, "--queues", QUEUE, "--concurrency", str(concurrency),
        "--log-level", "WARNING",
    ]  # fmt: skip


class WorkerGroup:
    """``count`` worker processes of ``tq.bench.tasks``; a context manager that stops them."""

    def __init__(
        self,
        url: str,
        count: int,
        concurrency: int,
        logdir: Path,
        api_key: str | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        # TQ_BROKER_URL would beat worker.broker_url: the URL must be ours; so the key.
        env = {k: v for k, v in os.environ.items() if k not in ("TQ_BROKER_URL", "TQ_API_KEY")}
        if api_key is not None:
            env["TQ_API_KEY"] = api_key
        self.argv = worker_argv(url, concurrency, tls)
        self.logs = [logdir / f"worker-{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for path in self.logs:
            with path.open("ab") as log:
                proc = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                )  # fmt: skip
                self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> int:
        return sum(1 for p in self.procs if p.poll() is None)

    def tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for p in self.procs:
            try:
                proc = psutil.Process(p.pid)
                out.append(proc)
                out.extend(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each worker (a graceful stop), SIGKILL what is left after ``grace``."""
        victims = self.tree()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for v in victims:
            try:
                v.kill()
            except psutil.NoSuchProcess:
                continue

    def log_tail(self, chars: int = 600) -> list[str]:
        return [path.read_text(errors="replace")[-chars:] for path in self.logs if path.exists()]

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def wait_for_workers(client: AsyncClient, group: WorkerGroup, timeout: float = 30.0) -> None:
    """Until the broker lists every worker of ``group`` as alive (registered, claiming)."""
    pids = set(group.pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {w.pid for w in await client.workers() if w.alive}
        if pids <= alive:
            return
        if group.alive() < len(pids):
            raise UnavailableError(f"a bench worker exited: {group.log_tail()}")
        await asyncio.sleep(0.02)
    raise UnavailableError(f"bench workers not registered within {timeout:g} s")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU of ``procs``, including their reaped children."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds of process ``pid`` so far (None: no such process or no PID)."""
    if pid is None:
        return None
    try:
        return cpu_seconds([psutil.Process(pid)])
    except psutil.NoSuchProcess:
        return None


def rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.NoSuchProcess:
        return None


class Sampler:
    """Peak RSS of the broker and of the worker processes (summed), sampled every 100 ms."""

    def __init__(self, broker_pid: int | None, workers: WorkerGroup | None = None) -> None:
        self.broker = psutil.Process(broker_pid) if broker_pid is not None else None
        self.workers = workers
        self.broker_peak = 0
        self.workers_peak = 0

    def broker_cpu(self) -> float | None:
        return None if self.broker is None else cpu_seconds([self.broker])

    def sample(self) -> None:
        if self.broker is not None:
            try:
                self.broker_peak = max(self.broker_peak, self.broker.memory_info().rss)
            except psutil.NoSuchProcess:
                self.broker = None
        if self.workers is not None:
            total = 0
            for p in self.workers.tree():
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.workers_peak = max(self.workers_peak, total)

    async def run(self, interval: float = 0.1) -> None:
        """Sample until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(interval)
