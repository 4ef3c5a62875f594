"""Workers that die, are stopped, or lose their broker: no task is lost or run twice in vain."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.test_worker_e2e import (
    BROKER_SETTINGS,
    FAST_RETRY,
    Env,
    exit_code,
    make_env,
    wait_for,
)
from tq.testing import BrokerProcess


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


@pytest.mark.parametrize("pool", ["asyncio", "process"])
def test_a_task_of_a_sigkilled_worker_runs_again_elsewhere_after_its_lease_expires(
    env: Env, pool: str
) -> None:
    stuck = env.submit("block", b"60", max_retries=3, retry=FAST_RETRY)
    doomed = env.worker("--pool", pool, "--concurrency", "1", "--prefetch", "1")
    (started,) = wait_for("the first attempt to start", lambda: env.marks_of(stuck, "started"))
    runner = int(started.read_text().split()[1])
    doomed.send_signal(signal.SIGKILL)
    assert exit_code(doomed) == -signal.SIGKILL
    # A pool child notices its parent is gone (EOF on its pipe) and exits: no orphans.
    wait_for("the handler's process to exit", lambda: not _alive(runner), timeout=10)
    rescuer = env.worker("--pool", pool, "--concurrency", "1", "--prefetch", "1")
    info = env.terminal(stuck)
    assert (info.state, info.attempts, info.result) == ("completed", 2, b"finished")
    assert [p.name.split(".")[1] for p in env.marks_of(stuck, "started")] == ["1", "2"]
    rescuer.terminate()
    assert exit_code(rescuer) == 0, env.log()


def test_sigterm_lets_running_tasks_finish_and_hands_back_the_unstarted(env: Env) -> None:
    running = [env.submit("block", b"1.5") for _ in range(2)]
    queued = [env.submit("pid") for _ in range(3)]
    worker = env.worker("--concurrency", "2", "--prefetch", "3")
    wait_for("both long tasks to start", lambda: all(env.marks_of(t, "started") for t in running))
    wait_for(
        "the worker to hold the queued tasks",
        lambda: all(env.client.status(t).state == "in_progress" for t in queued),
    )
    worker.send_signal(signal.SIGTERM)
    assert exit_code(worker) == 0, env.log()
    for task_id in running:
        info = env.client.status(task_id)
        assert (info.state, info.result, info.attempts) == ("completed", b"finished", 1)
    for task_id in queued:  # released, not failed: the claim did not count as an attempt
        info = env.client.status(task_id)
        assert (info.state, info.attempts) == ("pending", 0)
    assert "worker.stopping" in env.log() and "worker.stopped" in env.log()


def test_a_second_signal_forces_the_exit(env: Env) -> None:
    stuck = env.submit("block", b"60")
    worker = env.worker("--concurrency", "1", "--shutdown-timeout", "60")
    wait_for("the task to start", lambda: env.marks_of(stuck, "started"))
    worker.send_signal(signal.SIGTERM)
    wait_for("the graceful stop to begin", lambda: "worker.stopping" in env.log())
    worker.send_signal(signal.SIGTERM)
    assert exit_code(worker, timeout=15) == 130, env.log()


def test_the_worker_survives_a_broker_restart(env: Env) -> None:
    first = env.submit("pid")
    worker = env.worker("--concurrency", "2")
    assert env.client.result(first, timeout=20)
    env.client.close()
    port = env.broker.port
    env.broker.stop()
    env.broker = BrokerProcess(env.tmp / "data", port=port, settings=BROKER_SETTINGS).start()
    try:
        env.client = type(env.client)(env.broker.url)
        after = env.submit("pid")
        assert env.client.result(after, timeout=30)
        assert worker.poll() is None
        worker.terminate()
        assert exit_code(worker) == 0, env.log()
    finally:
        env.broker.stop()


def test_an_outcome_finished_while_the_broker_is_down_is_reported_after_it_returns(
    env: Env,
) -> None:
    slow = env.submit("block", b"0.5", max_retries=3, retry=FAST_RETRY)
    worker = env.worker("--concurrency", "1")
    wait_for("the task to start", lambda: env.marks_of(slow, "started"))
    env.client.close()
    port = env.broker.port
    env.broker.stop()
    # Its outcome now waits in the worker, whose report keeps being retried until a broker
    # answers (the client redials with backoff within each call).
    wait_for("the task to finish with no broker", lambda: env.marks_of(slow, "finished"))
    env.broker = BrokerProcess(env.tmp / "data", port=port, settings=BROKER_SETTINGS).start()
    try:
        env.client = type(env.client)(env.broker.url)
        # Either the retried report lands, or the broker re-ran the task (its lease was gone
        # and the stale report was dropped): both end completed, and the worker lives on.
        info = env.terminal(slow)
        assert (info.state, info.result) == ("completed", b"finished")
        worker.terminate()
        assert exit_code(worker) == 0, env.log()
    finally:
        env.broker.stop()


def _stop_time(worker: subprocess.Popen[bytes]) -> float:
    """Seconds from SIGTERM to the worker's exit (which must be clean)."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert exit_code(worker, timeout=30) == 0
    return time.monotonic() - started


def test_sigterm_stops_a_worker_whose_broker_is_down_within_seconds(env: Env) -> None:
    done = env.submit("pid")
    worker = env.worker("--concurrency", "2")
    assert env.client.result(done, timeout=20)
    env.client.close()
    env.broker.kill()
    wait_for("the worker to notice", lambda: "claim.failed" in env.log())
    # It was dialling (register, claim) for up to 30 s at a time and said goodbye for 10 s
    # more: about 16 s in all. Now the dialling stops at once and a goodbye needs a broker
    # that answers within 1 s.
    assert _stop_time(worker) < 5, env.log()
    log = env.log()
    assert "worker.deregister_skipped reason=broker unreachable" in log
    assert "worker.stopped" in log


def test_sigterm_stops_a_worker_that_never_reached_its_broker_within_seconds(
    tmp_path: Path,
) -> None:
    with BrokerProcess(tmp_path / "data", settings=BROKER_SETTINGS) as broker:
        world = Env(tmp_path, broker)
    try:  # the broker is gone: the worker dials a closed port
        worker = world.worker()
        wait_for("the worker to dial", lambda: "connect.failed" in world.log())
        assert _stop_time(worker) < 5, world.log()
    finally:
        world.close()
