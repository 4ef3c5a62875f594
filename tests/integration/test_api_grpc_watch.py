"""The gRPC streams against a real broker: ``WatchTasks`` (fed by the event hub, ended for a
slow consumer, ended at shutdown), ``WatchStats``, and the end-to-end check of the issue: a
task submitted over gRPC is run by a real ``tq worker`` process and its completion arrives on
the stream. A watch's response headers mean its subscription is in place (no sleeps)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from tests.integration.cli_procs import child_env, stop, wait_for
from tests.integration.test_api_grpc import Failed, tq_code
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(90)

T = 10.0  # the deadline of every unary call
STREAM_T = 60.0  # the deadline of every stream
GRPC_ONLY: dict[str, object] = {
    "api.grpc_enabled": True, "api.rest_enabled": False, "api.websocket_enabled": False,
    "api.dashboard_enabled": False, "monitoring.prometheus_enabled": False,
}  # fmt: skip
#: Enough tasks to overflow a watch that reads nothing (the broker buffers 100,000 events).
FLOOD = 120_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    settings = GRPC_ONLY | {"broker.backpressure_threshold": 10 * FLOOD}
    with BrokerProcess(tmp_path_factory.mktemp("grpc") / "d", settings=settings) as b:
        yield b


@pytest.fixture(scope="module")
def channel(broker: BrokerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> TaskQueueStub:
    return TaskQueueStub(channel)


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def watch(stub: TaskQueueStub, **fields: object) -> Iterator[pb.TaskEvent]:
    """The events of a WatchTasks stream, once the broker has the subscription in place."""
    call = stub.WatchTasks(pb.WatchTasksRequest(**fields), timeout=STREAM_T)  # type: ignore[arg-type]
    assert isinstance(call, grpc.Call)
    call.initial_metadata()  # blocks until the headers: the watch is live
    return (ev for message in call for ev in message.events)


def until(
    events: Iterator[pb.TaskEvent], done: Callable[[pb.TaskEvent], bool]
) -> list[pb.TaskEvent]:
    seen: list[pb.TaskEvent] = []
    for ev in events:
        seen.append(ev)
        if done(ev):
            return seen
    raise AssertionError(f"the stream ended first: {seen}")


def stream_error(events: Iterator[object]) -> Failed:
    with pytest.raises(grpc.RpcError) as info:
        for _ in events:
            pass
    return cast(Failed, info.value)


def submit(stub: TaskQueueStub, queue: str, payload: bytes = b"", **fields: object) -> str:
    spec = pb.TaskSpec(task_type="echo", queue=queue, payload=payload, **fields)  # type: ignore[arg-type]
    return stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T).id


@pytest.fixture
def worker(broker: BrokerProcess, stub: TaskQueueStub, queue: str, tmp_path: Path) -> Iterator[str]:
    """A real ``tq worker tq.worker.examples`` process on this test's queue; yields its name."""
    name = f"w-{queue}"
    argv = [
        sys.executable, "-m", "tq", "--set", f"worker.broker_url={broker.url}",
        "worker", "tq.worker.examples", "--queues", queue, "--name", name,
    ]  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())
    try:

        def registered() -> bool | None:
            assert proc.poll() is None, f"worker exited: {log.read_text()[-2000:]}"
            workers = stub.ListWorkers(pb.ListWorkersRequest(), timeout=T).workers
            return any(w.name == name and w.alive for w in workers) or None

        wait_for(f"worker {name} to register", registered)
        yield name
    finally:
        stop(proc)


def test_a_task_run_by_a_real_worker_completes_on_the_watch_streams(
    stub: TaskQueueStub, queue: str, worker: str
) -> None:
    by_queue = watch(stub, queues=[queue])
    task_id = submit(stub, queue, b'{"hello": 1}')
    by_id = watch(stub, ids=[task_id], until_terminal=True)

    seen = until(by_queue, lambda ev: ev.id == task_id and ev.state == pb.TASK_STATE_COMPLETED)
    assert next(ev.state for ev in seen if ev.id == task_id) == pb.TASK_STATE_PENDING
    assert seen[-1].result == b'{"hello": 1}'
    assert (seen[-1].queue, seen[-1].task_type, seen[-1].attempts) == (queue, "echo", 1)
    final = list(by_id)  # ends by itself: every watched task finished
    assert final[-1].state == pb.TASK_STATE_COMPLETED
    assert final[-1].result == b'{"hello": 1}'

    task = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=T)
    assert (task.state, task.result) == (pb.TASK_STATE_COMPLETED, b'{"hello": 1}')
    workers = {w.name: w for w in stub.ListWorkers(pb.ListWorkersRequest(), timeout=T).workers}
    assert list(workers[worker].queues) == [queue]


def test_watching_a_finished_task_reports_it_at_once_and_ends(
    stub: TaskQueueStub, queue: str
) -> None:
    task_id = submit(stub, queue)
    stub.CancelTask(pb.TaskRequest(id=task_id), timeout=T)
    events = list(watch(stub, ids=[task_id], until_terminal=True))
    assert [(ev.id, ev.state) for ev in events] == [(task_id, pb.TASK_STATE_CANCELLED)]


def test_watch_all_sees_a_task_from_submit_to_cancel(stub: TaskQueueStub, queue: str) -> None:
    events = watch(stub, all=True)
    task_id = submit(stub, queue)
    stub.CancelTask(pb.TaskRequest(id=task_id), timeout=T)
    seen = until(events, lambda ev: ev.id == task_id and ev.state == pb.TASK_STATE_CANCELLED)
    assert [ev.state for ev in seen if ev.id == task_id] == [
        pb.TASK_STATE_PENDING, pb.TASK_STATE_CANCELLED,
    ]  # fmt: skip


def test_bad_watches_get_their_status_and_code(stub: TaskQueueStub) -> None:
    cases = [
        (pb.WatchTasksRequest(), grpc.StatusCode.INVALID_ARGUMENT, 2000),
        (pb.WatchTasksRequest(ids=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, 2000),
        (pb.WatchTasksRequest(queues=[""]), grpc.StatusCode.INVALID_ARGUMENT, 2000),
        (pb.WatchTasksRequest(ids=[str(uuid.uuid4())]), grpc.StatusCode.NOT_FOUND, 3000),
        # Past the service's caps (broker.max_watched_task_ids, broker.max_watched_queues),
        # refused before any id is looked up.
        (pb.WatchTasksRequest(ids=[str(uuid.uuid4()) for _ in range(10_001)]),
         grpc.StatusCode.INVALID_ARGUMENT, 2000),
        (pb.WatchTasksRequest(queues=[f"q{i}" for i in range(1000)], all=True),
         grpc.StatusCode.INVALID_ARGUMENT, 2000),
    ]  # fmt: skip
    for request, status, code in cases:
        err = stream_error(stub.WatchTasks(request, timeout=T))
        assert (err.code(), tq_code(err)) == (status, code), err.details()
    err = stream_error(stub.WatchStats(pb.WatchStatsRequest(interval_ms=5), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.INVALID_ARGUMENT, 2000)


def test_watch_stats_sends_the_stats_now_and_then_every_interval(
    stub: TaskQueueStub, queue: str
) -> None:
    stream = stub.WatchStats(pb.WatchStatsRequest(interval_ms=100), timeout=STREAM_T)
    first = next(stream)
    submit(stub, queue)
    later = [next(stream) for _ in range(3)]
    assert first.at < later[0].at < later[1].at < later[2].at
    assert later[-1].totals["submitted"] > first.totals["submitted"]
    assert queue in {q.name for q in later[-1].queues}
    stream.cancel()


def test_a_slow_consumer_is_cut_off_and_the_broker_keeps_serving(
    broker: BrokerProcess, stub: TaskQueueStub, queue: str
) -> None:
    # HTTP/2 flow control holds what the client does not read (without BDP probing the
    # window stays small), so the broker's per-stream buffer fills up.
    target = f"127.0.0.1:{broker.ports['grpc_port']}"
    with grpc.insecure_channel(target, options=[("grpc.http2.bdp_probe", 0)]) as ch:
        slow = watch(TaskQueueStub(ch), queues=[queue])
        specs = [pb.TaskSpec(task_type="echo", queue=queue) for _ in range(10_000)]
        for _ in range(FLOOD // len(specs)):
            stub.SubmitTasks(pb.SubmitTasksRequest(tasks=specs), timeout=T)
        err = stream_error(slow)
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 4000)
    assert "behind" in (err.details() or "")
    fresh = watch(stub, queues=[queue])
    task_id = submit(stub, queue)
    assert until(fresh, lambda ev: ev.id == task_id)[-1].state == pb.TASK_STATE_PENDING


def test_streams_end_unavailable_when_the_broker_stops(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "d", settings=GRPC_ONLY).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
            stub = TaskQueueStub(ch)
            tasks = watch(stub, all=True)
            stats = stub.WatchStats(pb.WatchStatsRequest(interval_ms=60_000), timeout=STREAM_T)
            next(stats)
            assert broker.stop(timeout=20) == 0
            for stream in (tasks, stats):
                err = stream_error(stream)
                assert (err.code(), tq_code(err)) == (grpc.StatusCode.UNAVAILABLE, 6001)
    finally:
        broker.stop()
