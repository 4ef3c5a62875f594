"""Worker inspect and control end to end: a real broker and real ``tq worker`` processes.

Inspect shows what a worker runs and what it reserved; orders make it stop taking a queue,
take another, or shut down as on SIGTERM; an order reaches the worker at once (pushed, not at
its next heartbeat) and survives a broker restart.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import run_tq
from tests.integration.test_worker_e2e import (
    BROKER_SETTINGS,
    Env,
    exit_code,
    make_env,
    wait_for,
)
from tq.client import Client, WorkerDetail
from tq.errors import ErrorCode, NotFoundError, TqError
from tq.testing import BrokerProcess

#: A broker that would tell a worker its orders only every 30 s: what arrives sooner was
#: pushed. Workers are declared dead after 66 s, so a stopped one keeps its record.
SLOW_BEATS = {**BROKER_SETTINGS, "broker.heartbeat_interval_s": 30, "broker.lease_duration_s": 60}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


def detail(client: Client, worker_id: str) -> WorkerDetail | None:
    try:
        return client.inspect_worker(worker_id)
    except NotFoundError:
        return None


def queues_become(client: Client, worker_id: str, queues: list[str]) -> WorkerDetail | None:
    """The worker's record shows ``queues`` and no order left to carry out."""
    found = detail(client, worker_id)
    if found is None or found.worker.queues != queues or found.orders:
        return None
    return found


def test_inspect_shows_the_tasks_a_worker_runs_and_those_it_reserved(env: Env) -> None:
    runs = env.submit("block", b"30")
    waiting = sorted(env.submit("pid") for _ in range(2))
    env.worker("--name", "w-inspect", "--concurrency", "1", "--prefetch", "2")
    wait_for("the long task to start", lambda: env.marks_of(runs, "started"))

    def split() -> WorkerDetail | None:
        found = detail(env.client, "w-inspect")
        return found if found is not None and found.running == [runs] else None

    found = wait_for("a heartbeat saying it runs the long task", split)
    assert sorted(found.reserved) == waiting
    w = found.worker
    assert (w.running, w.reserved, w.queues, w.draining, w.orders) == (1, 2, ["default"], False, 0)
    (listed,) = [x for x in env.client.workers() if x.id == "w-inspect"]
    assert (listed.running, listed.reserved) == (1, 2)
    with pytest.raises(NotFoundError) as unknown:
        env.client.inspect_worker("w-nobody")
    assert unknown.value.code is ErrorCode.WORKER_NOT_FOUND


def test_stop_consuming_makes_a_worker_leave_a_queue_and_consume_adds_one(env: Env) -> None:
    env.worker("--name", "w-queues", "--queues", "a,b", "--concurrency", "2")
    wait_for("the worker", lambda: queues_become(env.client, "w-queues", ["a", "b"]))
    order = env.client.stop_consuming("w-queues", "b")
    assert order is not None and (order.action, order.queue) == ("stop_consuming", "b")
    wait_for("the worker to leave b", lambda: queues_become(env.client, "w-queues", ["a"]))
    left = env.submit("pid", queue="b")
    for _ in range(3):  # each served by a claim asking only for a, after the order
        assert env.client.result(env.submit("pid", queue="a"), timeout=20)
    assert env.client.status(left).state == "pending"
    assert env.client.stop_consuming("w-queues", "b") is None  # nothing to do: idempotent

    assert env.client.consume("w-queues", "c") is not None
    wait_for("the worker to take c", lambda: queues_become(env.client, "w-queues", ["a", "c"]))
    assert env.client.result(env.submit("pid", queue="c"), timeout=20)
    env.client.consume("w-queues", "b")
    assert env.client.result(left, timeout=20)  # the task it left behind, now taken
    for queue in ("a", "b"):
        env.client.stop_consuming("w-queues", queue)
    with pytest.raises(TqError) as last:
        env.client.stop_consuming("w-queues", "c")
    assert last.value.code is ErrorCode.INVALID_ARGUMENT
    assert "only queue" in last.value.message


def test_shutdown_makes_a_worker_exit_gracefully_finishing_what_it_runs(env: Env) -> None:
    runs = env.submit("block", b"3")
    queued = [env.submit("pid") for _ in range(2)]
    worker = env.worker("--name", "w-stop", "--concurrency", "1", "--prefetch", "2")
    wait_for("the long task to start", lambda: env.marks_of(runs, "started"))
    wait_for(
        "the worker to reserve the others",
        lambda: all(env.client.status(t).state == "in_progress" for t in queued),
    )
    order = env.client.shutdown_worker("w-stop")
    assert order is not None and order.action == "shutdown"

    def draining() -> bool:
        found = detail(env.client, "w-stop")
        return found is not None and found.worker.draining

    wait_for("the worker to say it drains", draining)
    with pytest.raises(TqError) as refused:
        env.client.consume("w-stop", "other")
    assert refused.value.code is ErrorCode.INVALID_STATE
    assert exit_code(worker) == 0, env.log()
    info = env.client.status(runs)
    assert (info.state, info.result, info.attempts) == ("completed", b"finished", 1)
    for task_id in queued:  # handed back unstarted: the claim did not count
        info = env.client.status(task_id)
        assert (info.state, info.attempts) == ("pending", 0)
    assert detail(env.client, "w-stop") is None  # deregistered: its record is gone
    assert "worker.order" in env.log() and "worker.stopped" in env.log()


def test_an_order_is_pushed_to_the_worker_not_left_for_its_next_heartbeat(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", settings=SLOW_BEATS) as broker:
        env = Env(tmp_path, broker)
        try:
            env.worker("--name", "w-push", "--queues", "a")
            wait_for("the worker", lambda: queues_become(env.client, "w-push", ["a"]), timeout=30)
            env.client.consume("w-push", "b")
            # Well within the 30 s heartbeat interval: the push carried it.
            wait_for("b", lambda: queues_become(env.client, "w-push", ["a", "b"]), timeout=10)
        finally:
            env.close()


def test_an_order_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", settings=SLOW_BEATS).start()
    env = Env(tmp_path, broker)
    try:
        worker = env.worker("--name", "w-restart")
        wait_for("the worker", lambda: detail(env.client, "w-restart"), timeout=30)
        worker.send_signal(signal.SIGSTOP)  # it hears nothing until SIGCONT
        try:
            order = env.client.shutdown_worker("w-restart")
            assert order is not None
            env.client.close()
            port = broker.port
            broker.stop()
            broker = env.broker = BrokerProcess(
                tmp_path / "data", port=port, settings=SLOW_BEATS
            ).start()
            env.client = Client(broker.url)
            found = detail(env.client, "w-restart")
            assert found is not None
            assert [(o.seq, o.action) for o in found.orders] == [(order.seq, "shutdown")]
        finally:
            worker.send_signal(signal.SIGCONT)
        # Back, it registers with the new broker, whose reply repeats the order.
        assert exit_code(worker) == 0, env.log()
        assert detail(env.client, "w-restart") is None
    finally:
        env.close()
        broker.stop()


def test_each_cli_form_inspects_and_orders_a_worker(env: Env) -> None:
    runs = env.submit("block", b"30")
    worker = env.worker(
        "--name", "w-cli", "--queues", "default,x", "--concurrency", "1",
        "--shutdown-timeout", "1",
    )  # fmt: skip
    wait_for("the long task to start", lambda: env.marks_of(runs, "started"))
    url = env.broker.url

    def tq(*args: str) -> str:
        done = run_tq(*args, url=url)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def listed() -> dict[str, object] | None:
        rows = [w for w in json.loads(tq("workers", "-o", "json")) if w["id"] == "w-cli"]
        return rows[0] if rows and rows[0]["running"] == 1 else None

    row = wait_for("tq workers to show the task running", listed)
    assert (row["state"], row["reserved"], row["queues"]) == ("consuming", 0, ["default", "x"])
    table = tq("workers")
    assert "w-cli" in table and "consuming" in table
    shown = json.loads(tq("workers", "inspect", "w-cli", "-o", "json"))
    assert shown["running_ids"] == [runs] and shown["reserved_ids"] == []
    assert runs in tq("workers", "inspect", "w-cli")

    out = json.loads(tq("workers", "stop-consuming", "w-cli", "x", "--wait", "-o", "json"))
    assert (out["action"], out["queue"], out["carried_out"]) == ("stop_consuming", "x", True)
    assert env.client.inspect_worker("w-cli").worker.queues == ["default"]
    assert "done" in tq("workers", "consume", "w-cli", "y", "--wait")
    assert env.client.inspect_worker("w-cli").worker.queues == ["default", "y"]
    assert "nothing to do" in tq("workers", "consume", "w-cli", "y")

    missing = run_tq("workers", "inspect", "w-nobody", url=url)
    assert missing.returncode != 0 and "w-nobody" in missing.stderr
    # Its long task is interrupted after --shutdown-timeout, as on SIGTERM.
    stopped = run_tq("workers", "shutdown", "w-cli", "--wait", "--timeout", "60", url=url)
    assert stopped.returncode == 0, stopped.stderr
    assert exit_code(worker) == 0, env.log()
