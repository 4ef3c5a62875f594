"""Workers end to end: a real broker and real ``tq worker`` processes over real sockets.

Handlers live in a module written into tmp_path (on the workers' PYTHONPATH). They leave
marker files in a directory named by ``TQ_TEST_MARKS``, which is how a test learns that a
task *started* (to kill or stop a worker mid-task) without sleeping.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tq.client import Client
from tq.protocol import RetrySpec, TaskInfo
from tq.testing import BrokerProcess

T = TypeVar("T")

HANDLERS = '''
import asyncio, os, pathlib, time
import tq
from tq.worker import current_task

MARKS = pathlib.Path(os.environ["TQ_TEST_MARKS"])

def mark(kind):
    ctx = current_task()
    (MARKS / f"{ctx.id}.{ctx.attempt}.{kind}").write_text(f"{time.time()} {os.getpid()}")

@tq.task
def add(a: int, b: int) -> int:
    return a + b

@tq.task
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b

@tq.handler("pid")
def pid(payload):
    return str(os.getpid()).encode()

@tq.handler("fail")
def fail(payload):
    mark("attempt")
    raise RuntimeError("always fails")

@tq.handler("spin")
def spin(payload):
    mark("started")
    while True:  # CPU-bound, deaf to everything: only SIGKILL stops it
        pass

@tq.handler("block")
def block(payload):
    """Sleeps float(payload) seconds on the first attempt only, then returns."""
    mark("started")
    if current_task().attempt == 1:
        time.sleep(float(payload))
    mark("finished")
    return b"finished"

@tq.handler("nap")
async def nap(payload):
    """The async twin of block."""
    mark("started")
    if current_task().attempt == 1:
        await asyncio.sleep(float(payload))
    return b"finished"

@tq.handler("until_cancelled")
def until_cancelled(payload):
    ctx = current_task()
    ctx.progress(50, "waiting to be cancelled")
    mark("started")
    if ctx.wait_cancelled(30):
        mark("saw-cancel")
    return b"done"
'''

#: Short leases and intervals so crash recovery takes seconds; small retry delays.
BROKER_SETTINGS = {
    "broker.lease_duration_s": 2,
    "broker.lease_check_interval_s": 0.5,
    "broker.heartbeat_interval_s": 0.5,
    "broker.maintenance_interval_s": 0.5,
    "broker.retry_backoff_base_s": 0.1,
    "broker.retry_backoff_max_s": 0.5,
}
FAST_RETRY = RetrySpec(base=0.2, factor=1.0, max_delay=0.2, jitter=0.0)


class Env:
    """One test's world: the broker, a client, the handler module and worker processes."""

    def __init__(self, tmp_path: Path, broker: BrokerProcess) -> None:
        self.tmp = tmp_path
        self.broker = broker
        self.marks = tmp_path / "marks"
        self.marks.mkdir(exist_ok=True)
        (tmp_path / "it_handlers.py").write_text(HANDLERS)
        self.client = Client(broker.url)
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self, *args: str, module: str = "it_handlers") -> subprocess.Popen[bytes]:
        """Start ``tq worker MODULE ARGS`` as a process of its own (its own process group)."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.tmp), os.environ.get("PYTHONPATH", "")]),
            "TQ_TEST_MARKS": str(self.marks),
        }
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("ab")
        argv = [sys.executable, "-m", "tq", "--set", f"worker.broker_url={self.broker.url}"]
        argv += ["worker", module, "--log-level", "DEBUG", *args]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.workers.append(proc)
        return proc

    def log(self, index: int = -1) -> str:
        n = index if index >= 0 else len(self.workers) + index
        return (self.tmp / f"worker-{n}.log").read_text(errors="replace")

    def submit(self, task_type: str, payload: bytes = b"", **options: object) -> str:
        return self.client.submit(task_type, payload, **options)  # type: ignore[arg-type]

    def terminal(self, task_id: str, timeout: float = 30.0) -> TaskInfo:
        return self.client.wait(task_id, timeout=timeout)

    def marks_of(self, task_id: str, kind: str) -> list[Path]:
        return sorted(self.marks.glob(f"{task_id}.*.{kind}"))

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.client.close()


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)  # polling a condition with a deadline
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def exit_code(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    return proc.wait(timeout)


def make_env(tmp_path: Path) -> Iterator[Env]:
    with BrokerProcess(tmp_path / "data", settings=BROKER_SETTINGS) as broker:
        world = Env(tmp_path, broker)
        try:
            yield world
        finally:
            world.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


def args_payload(*args: object) -> bytes:
    return json.dumps({"args": list(args)}).encode()


@pytest.mark.parametrize("pool", ["asyncio", "thread", "process"])
def test_sync_async_and_raw_handlers_run_and_their_results_land(env: Env, pool: str) -> None:
    added = env.submit("it_handlers.add", args_payload(2, 3))
    async_added = env.submit("it_handlers.async_add", args_payload(20, 22))
    pid = env.submit("pid")
    worker = env.worker("--pool", pool, "--concurrency", "2", "--burst")
    assert exit_code(worker) == 0, env.log()
    assert env.client.result(added, timeout=5) == b"5"
    assert env.client.result(async_added, timeout=5) == b"42"
    child = int(env.client.result(pid, timeout=5))
    # The process pool runs handlers in children; the others in the worker process itself.
    assert (child != worker.pid) == (pool == "process")


def test_a_task_type_without_a_handler_is_dead_lettered_naming_the_handlers(env: Env) -> None:
    orphan = env.submit("nobody.handles.this")
    assert exit_code(env.worker("--burst")) == 0, env.log()
    info = env.terminal(orphan)
    assert (info.state, info.attempts) == ("dead_letter", 1)
    assert info.error is not None
    assert "'nobody.handles.this'" in info.error and "it_handlers.add" in info.error


def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered(env: Env) -> None:
    failing = env.submit("fail", max_retries=2, retry=FAST_RETRY)
    worker = env.worker("--concurrency", "1")
    info = env.terminal(failing)
    assert (info.state, info.attempts) == ("dead_letter", 3)
    assert (info.error, info.error_type) == ("always fails", "RuntimeError")
    times = [float(p.read_text().split()[0]) for p in env.marks_of(failing, "attempt")]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.15 for gap in gaps), gaps  # the 0.2 s backoff, minus clock slack
    worker.terminate()
    assert exit_code(worker) == 0, env.log()


def test_a_handler_past_its_timeout_is_killed_and_retried(env: Env) -> None:
    spinning = env.submit("spin", timeout=0.5, max_retries=1, retry=FAST_RETRY)
    worker = env.worker("--pool", "process", "--concurrency", "1", "--prefetch", "1")
    info = env.terminal(spinning)
    assert (info.state, info.attempts) == ("dead_letter", 2)
    assert info.error == "timed out after 0.5s"
    pids = {int(p.read_text().split()[1]) for p in env.marks_of(spinning, "started")}
    assert len(pids) == 2  # each attempt ran in a fresh child: the first one was killed
    # The replacement child serves the next task.
    after = env.submit("pid")
    assert int(env.client.result(after, timeout=20)) not in pids
    worker.terminate()
    assert exit_code(worker) == 0, env.log()


@pytest.mark.parametrize(("pool", "task_type"), [("thread", "block"), ("asyncio", "nap")])
def test_a_timed_out_attempt_is_abandoned_and_the_retry_runs(
    env: Env, pool: str, task_type: str
) -> None:
    slow = env.submit(task_type, b"30", timeout=0.5, max_retries=1, retry=FAST_RETRY)
    worker = env.worker("--pool", pool, "--concurrency", "1", "--prefetch", "1")
    info = env.terminal(slow)
    assert (info.state, info.attempts, info.result) == ("completed", 2, b"finished")
    assert "timed out after 0.5s" in env.log()
    worker.terminate()
    # A thread stuck in the first attempt is a daemon: it cannot hold the exit back.
    assert exit_code(worker, timeout=15) == 0, env.log()


def test_the_shipped_examples_serve_echo_sleep_and_json(env: Env) -> None:
    echo = env.submit("echo", b"\x00any bytes")
    nap = env.submit("sleep", b'{"seconds": 0.05}')
    summary = env.submit("json", b'{"b": 1, "a": [1, 2]}')
    bad = env.submit("json", b"{nope")
    assert exit_code(env.worker("--burst", module="tq.worker.examples")) == 0, env.log()
    assert env.client.result(echo, timeout=5) == b"\x00any bytes"
    assert json.loads(env.client.result(nap, timeout=5)) == {"slept": 0.05}
    described = json.loads(env.client.result(summary, timeout=5))
    assert (described["type"], described["keys"], described["depth"]) == ("object", ["a", "b"], 2)
    info = env.terminal(bad)
    assert (info.state, info.attempts, info.error_type) == ("dead_letter", 1, "Reject")
    assert info.error is not None and "not valid JSON" in info.error


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_cancelled_task_sees_its_flag_and_its_progress_was_visible(env: Env, pool: str) -> None:
    waiting = env.submit("until_cancelled")
    worker = env.worker("--pool", pool, "--concurrency", "1")
    wait_for("the task to start", lambda: env.marks_of(waiting, "started"))
    if pool == "thread":  # progress from a child process is forwarded too, but not awaited here
        progress = wait_for("progress", lambda: env.client.status(waiting).progress == 50)
        assert progress
    env.client.cancel(waiting)
    wait_for("the handler to see the cancel", lambda: env.marks_of(waiting, "saw-cancel"))
    assert env.terminal(waiting).state == "cancelled"
    worker.terminate()
    assert exit_code(worker) == 0, env.log()
    assert "task.disowned" in env.log()
