"""Runs the scenarios of a ``BenchConfig`` and assembles the result document.

Each scenario gets a fresh broker (fsync-durable, empty temp data dir) unless ``url`` names an
existing one, runs on its own event loop (``tq.eventloop``) under a time limit, and cannot take
the others down: its failure is recorded under ``errors`` and the run goes on. Live progress is
a rich bar on stderr fed from the scenario's ``Meter`` by a refresh thread; when stderr is not
a terminal (a log file, CI), plain lines instead, which such a file keeps.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tq.bench import drain, enqueue, footprint, latency, steady
from tq.bench.config import BenchConfig
from tq.bench.measure import Meter
from tq.bench.procs import Target, broker_settings, external_tls, fresh_broker
from tq.bench.report import SCHEMA, check_targets, is_ok
from tq.core.times import format_rfc3339
from tq.eventloop import loop_factory

#: Characters of an error kept in the result (a broker's log tail can be long).
MAX_ERROR = 2000
#: Seconds between progress lines when stderr is not a terminal.
LINE_INTERVAL = 5.0

Scenario = Callable[[Target, BenchConfig, Meter], Awaitable[dict[str, Any]]]

SCENARIO_FUNCS: dict[str, Scenario] = {
    "enqueue": enqueue.run,
    "drain": drain.run,
    "latency": latency.run,
    "steady": steady.run,
    "memory": footprint.run_memory,
    "restart": footprint.run_restart,
}


def time_limit(name: str, cfg: BenchConfig) -> float:
    """Seconds a scenario may run before it is cancelled (generous: >= 1,000 tasks/s)."""
    base = 60.0
    if name == "enqueue":
        return base + 2 * cfg.tasks / 1000
    if name == "drain":
        return base + cfg.tasks / 1000 + drain.deadline_for(cfg.tasks)
    if name == "latency":
        return base + 2 * latency.MAX_S
    if name == "steady":
        return base + cfg.duration * 2 + max(steady.SETTLE_S, cfg.duration)
    return base + 2 * cfg.stored_tasks / 1000 + 2 * footprint.START_TIMEOUT_S


def host_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("tq", "msgspec", "rocksdict", "uvloop"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_scenario(name: str, cfg: BenchConfig, workdir: Path, meter: Meter) -> dict[str, Any]:
    func = SCENARIO_FUNCS[name]
    limit = time_limit(name, cfg)

    async def bounded(target: Target) -> dict[str, Any]:
        try:
            async with asyncio.timeout(limit):
                return await func(target, cfg, meter)
        except TimeoutError:
            raise TimeoutError(f"{name} did not finish within its limit of {limit:g} s") from None

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if cfg.url is not None:
            tls = external_tls(cfg.url, dict(cfg.broker_settings))
            target = Target(cfg.url, None, workdir / name, cfg.api_key, tls)
            target.workdir.mkdir(parents=True, exist_ok=True)
            return runner.run(bounded(target))
        with fresh_broker(broker_settings(cfg), workdir, name, cfg.api_key) as target:
            return runner.run(bounded(target))


@contextmanager
def live_progress(meter: Meter, console: Console, enabled: bool) -> Iterator[None]:
    """A progress bar that follows ``meter`` (label, done/total) until the block ends; plain
    lines (``progress_lines``) on a console that is not a terminal."""
    if not enabled:
        yield
        return
    if not console.is_terminal:
        with progress_lines(meter, console):
            yield
        return
    stop = threading.Event()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    task = progress.add_task("starting", total=None)

    def follow() -> None:
        while not stop.wait(0.1):
            progress.update(task, description=meter.label, total=meter.total or None,
                            completed=meter.done)  # fmt: skip

    thread = threading.Thread(target=follow, name="tq-bench-progress", daemon=True)
    with progress:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


@contextmanager
def progress_lines(
    meter: Meter, console: Console, interval: float = LINE_INTERVAL
) -> Iterator[None]:
    """``tq bench: drain: running 40,000/100,000 (12 s)`` when the label changes and every
    ``interval`` seconds: a bar redrawn in place would leave nothing in a file."""
    stop = threading.Event()
    started = time.monotonic()

    def line() -> str:
        count = f"{meter.done:,}/{meter.total:,}" if meter.total else f"{meter.done:,}"
        return f"tq bench: {meter.label} {count} ({time.monotonic() - started:.0f} s)"

    def follow() -> None:
        label, at = None, 0.0
        while not stop.wait(0.1):
            now = time.monotonic()
            if meter.label and (meter.label != label or now - at >= interval):
                console.out(line(), highlight=False)
                label, at = meter.label, now

    thread = threading.Thread(target=follow, name="tq-bench-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def run_bench(
    cfg: BenchConfig, *, progress: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run every scenario of ``cfg``; the result document (schema ``tq-bench/1``)."""
    to_run, skipped = cfg.runnable()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": format_rfc3339(time.time()),
        "config": cfg.as_dict(),
        "host": host_info(),
        "versions": versions(),
        "scenarios": {},
        "skipped": skipped,
        "errors": {},
    }
    meter = Meter()
    workdir = Path(tempfile.mkdtemp(prefix="tq-bench-"))
    try:
        with live_progress(meter, console or Console(stderr=True), progress):
            for name in to_run:
                meter.reset(f"{name}: starting", 0)
                try:
                    result["scenarios"][name] = run_scenario(name, cfg, workdir, meter)
                except Exception as exc:  # noqa: BLE001 - one scenario's failure is a figure too
                    result["errors"][name] = f"{type(exc).__name__}: {exc}"[-MAX_ERROR:]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished_at"] = format_rfc3339(time.time())
    result["targets"] = check_targets(result["scenarios"])
    result["ok"] = is_ok(result)
    return result
