"""The gRPC API against a real broker over real sockets, through the generated stubs: every
unary RPC, the health service and server reflection. Bad input is in test_api_grpc_errors.py,
streams in test_api_grpc_watch.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

T = 10.0  # the deadline of every call
#: Only the gRPC front door: these tests must not depend on the other front doors.
GRPC_ONLY: dict[str, object] = {
    "api.grpc_enabled": True, "api.rest_enabled": False, "api.websocket_enabled": False,
    "api.dashboard_enabled": False, "monitoring.prometheus_enabled": False,
}  # fmt: skip
UNKNOWN_ID = "00000000-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("grpc") / "d", settings=GRPC_ONLY) as b:
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
    """A queue of this test's own, so tests sharing the broker do not see each other."""
    return f"q-{uuid.uuid4().hex[:12]}"


class Failed(Protocol):
    """What a failed call raises: an RpcError that is also the grpc.Call that failed."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...


def rpc_error(call: Callable[[], object]) -> Failed:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return cast(Failed, info.value)


def tq_code(err: Failed) -> int:
    codes = [v for k, v in err.trailing_metadata() or () if k == "tq-error-code"]
    assert len(codes) == 1, err.trailing_metadata()
    return int(codes[0])


def submit(stub: TaskQueueStub, queue: str, **fields: object) -> str:
    spec = pb.TaskSpec(task_type=str(fields.pop("task_type", "echo")), queue=queue, **fields)  # type: ignore[arg-type]
    return stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T).id


def dead_task(stub: TaskQueueStub, queue: str) -> str:
    """A task in dead_letter without a worker: its dependency was cancelled."""
    parent = submit(stub, queue, delay=3600.0)
    child = submit(stub, queue, depends_on=[parent])
    stub.CancelTask(pb.TaskRequest(id=parent), timeout=T)
    assert stub.GetTask(pb.GetTaskRequest(id=child), timeout=T).state == pb.TASK_STATE_DEAD_LETTER
    return child


def test_a_submitted_task_can_be_read_back_with_its_payload(
    stub: TaskQueueStub, queue: str
) -> None:
    spec = pb.TaskSpec(
        task_type="echo", queue=queue, payload=b"\x00hi", priority=210, tags={"k": "v"},
        max_retries=5, timeout=30.0,
    )  # fmt: skip
    reply = stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T)
    assert reply.created
    assert str(uuid.UUID(reply.id)) == reply.id

    task = stub.GetTask(pb.GetTaskRequest(id=reply.id, include_payload=True), timeout=T)
    assert (task.id, task.queue, task.task_type) == (reply.id, queue, "echo")
    assert (task.payload, task.priority, dict(task.tags)) == (b"\x00hi", 210, {"k": "v"})
    assert (task.state, task.max_retries, task.timeout) == (pb.TASK_STATE_PENDING, 5, 30.0)
    assert task.created_at > 0
    assert not task.HasField("result")
    assert not stub.GetTask(pb.GetTaskRequest(id=reply.id), timeout=T).HasField("payload")


def test_an_idempotency_key_submitted_twice_creates_one_task(
    stub: TaskQueueStub, queue: str
) -> None:
    spec = pb.TaskSpec(task_type="echo", queue=queue, idempotency_key=f"key-{queue}")
    first = stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T)
    again = stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T)
    assert (first.created, again.created, again.id) == (True, False, first.id)


def test_submit_tasks_answers_the_ids_in_request_order(stub: TaskQueueStub, queue: str) -> None:
    specs = [pb.TaskSpec(task_type=f"t{i}", queue=queue) for i in range(5)]
    reply = stub.SubmitTasks(pb.SubmitTasksRequest(tasks=specs), timeout=T)
    types = [stub.GetTask(pb.GetTaskRequest(id=r.id), timeout=T).task_type for r in reply.tasks]
    assert types == [f"t{i}" for i in range(5)]


def test_list_tasks_filters_and_pages_with_a_cursor(stub: TaskQueueStub, queue: str) -> None:
    high = [submit(stub, queue, priority=250) for _ in range(3)]
    low = [submit(stub, queue, priority=10, task_type="other") for _ in range(2)]
    stub.CancelTask(pb.TaskRequest(id=low[0]), timeout=T)

    def listing(f: pb.TaskFilter, limit: int = 100) -> list[str]:
        ids: list[str] = []
        cursor = b""
        for _ in range(50):
            page = stub.ListTasks(
                pb.ListTasksRequest(filter=f, cursor=cursor, limit=limit), timeout=T
            )
            ids += [t.id for t in page.tasks]
            cursor = page.next_cursor
            if not cursor:
                return ids
        raise AssertionError("the listing never ended")

    assert listing(pb.TaskFilter(queue=queue)) == [*high, *low]
    assert listing(pb.TaskFilter(queue=queue), limit=2) == [*high, *low]
    assert listing(pb.TaskFilter(queue=queue, priority_tier=pb.PRIORITY_TIER_HIGH)) == high
    assert listing(pb.TaskFilter(queue=queue, priority_max=99, task_type="other")) == low
    assert listing(pb.TaskFilter(queue=queue, state=pb.TASK_STATE_CANCELLED)) == low[:1]
    assert listing(pb.TaskFilter(queue=queue, created_after=4e9)) == []


def test_cancel_answers_the_cancelled_task_and_refuses_a_finished_one(
    stub: TaskQueueStub, queue: str
) -> None:
    task_id = submit(stub, queue)
    assert stub.CancelTask(pb.TaskRequest(id=task_id), timeout=T).state == pb.TASK_STATE_CANCELLED
    err = rpc_error(lambda: stub.CancelTask(pb.TaskRequest(id=task_id), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.FAILED_PRECONDITION, 3002)
    assert task_id in (err.details() or "")


def test_retry_requeues_a_dead_lettered_task_only(stub: TaskQueueStub, queue: str) -> None:
    task_id = dead_task(stub, queue)
    assert stub.RetryTask(pb.TaskRequest(id=task_id), timeout=T).state == pb.TASK_STATE_PENDING
    err = rpc_error(lambda: stub.RetryTask(pb.TaskRequest(id=task_id), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.FAILED_PRECONDITION, 3002)


def test_delete_removes_a_finished_task_but_not_a_live_one(stub: TaskQueueStub, queue: str) -> None:
    live, done = submit(stub, queue), submit(stub, queue)
    stub.CancelTask(pb.TaskRequest(id=done), timeout=T)
    assert stub.DeleteTask(pb.TaskRequest(id=done), timeout=T).id == done
    gone = rpc_error(lambda: stub.GetTask(pb.GetTaskRequest(id=done), timeout=T))
    assert (gone.code(), tq_code(gone)) == (grpc.StatusCode.NOT_FOUND, 3000)
    err = rpc_error(lambda: stub.DeleteTask(pb.TaskRequest(id=live), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.FAILED_PRECONDITION, 3002)


def test_bulk_operations_by_ids_answer_one_code_per_id(stub: TaskQueueStub, queue: str) -> None:
    a, b, dead = submit(stub, queue), submit(stub, queue), dead_task(stub, queue)
    cancel = stub.CancelTasks(pb.BulkRequest(ids=[a, b, UNKNOWN_ID]), timeout=T)
    assert [(r.id, r.code) for r in cancel.results] == [(a, 0), (b, 0), (UNKNOWN_ID, 3000)]
    assert cancel.applied == 2
    assert "no task" in cancel.results[2].message

    retry = stub.RetryTasks(pb.BulkRequest(ids=[dead, a]), timeout=T)
    assert [r.code for r in retry.results] == [0, 3002]
    delete = stub.DeleteTasks(pb.BulkRequest(ids=[a, b, dead]), timeout=T)
    assert [r.code for r in delete.results] == [0, 0, 3002]


def test_bulk_operations_by_filter_act_on_the_matching_tasks(
    stub: TaskQueueStub, queue: str
) -> None:
    keep = submit(stub, queue, priority=10)
    hits = [submit(stub, queue, priority=250) for _ in range(3)]
    f = pb.TaskFilter(queue=queue, priority_tier=pb.PRIORITY_TIER_HIGH)
    reply = stub.CancelTasks(pb.BulkRequest(filter=f, limit=2), timeout=T)
    assert [r.id for r in reply.results] == hits[:2]
    assert reply.applied == 2
    assert stub.GetTask(pb.GetTaskRequest(id=keep), timeout=T).state == pb.TASK_STATE_PENDING

    for bad in (
        pb.BulkRequest(),
        pb.BulkRequest(ids=[keep], filter=f),
        pb.BulkRequest(filter=f, limit=99_999),
    ):
        err = rpc_error(lambda bad=bad: stub.CancelTasks(bad, timeout=T))  # type: ignore[misc]
        assert (err.code(), tq_code(err)) == (grpc.StatusCode.INVALID_ARGUMENT, 2000)


def test_bulk_by_filter_goes_on_from_its_cursor_and_ends_though_nothing_changes(
    stub: TaskQueueStub, queue: str
) -> None:
    made = [submit(stub, queue) for _ in range(5)]
    seen: list[tuple[str, int]] = []
    cursor = b""
    for _ in range(10):  # three calls are expected
        request = pb.BulkRequest(filter=pb.TaskFilter(queue=queue), limit=2, cursor=cursor)
        reply = stub.RetryTasks(request, timeout=T)
        seen += [(r.id, r.code) for r in reply.results]
        assert reply.truncated is bool(reply.next_cursor)
        cursor = reply.next_cursor
        if not cursor:
            break
    assert seen == [(i, 3002) for i in made]  # pending, not dead letter: each reported once
    err = rpc_error(lambda: stub.RetryTasks(pb.BulkRequest(ids=made, cursor=b"x"), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.INVALID_ARGUMENT, 2000)
    assert "cursor goes with filter" in (err.details() or "")


def test_stats_and_queues_show_the_depth_per_priority_tier(stub: TaskQueueStub, queue: str) -> None:
    for p in (10, 150, 150, 250):
        submit(stub, queue, priority=p)
    submit(stub, queue, delay=3600.0)
    depth = {q.name: q for q in stub.ListQueues(pb.ListQueuesRequest(), timeout=T).queues}[queue]
    assert (depth.low, depth.normal, depth.high, depth.scheduled) == (1, 2, 1, 1)

    stats = stub.GetStats(pb.GetStatsRequest(), timeout=T)
    assert {q.name: q for q in stats.queues}[queue] == depth
    assert stats.pending >= 4
    assert stats.totals["submitted"] >= 5
    assert stats.node_id
    assert stats.at > 0


def test_list_workers_answers_the_registered_workers(stub: TaskQueueStub) -> None:
    # Workers are shown registered in test_api_grpc_watch (a real worker process).
    assert list(stub.ListWorkers(pb.ListWorkersRequest(), timeout=T).workers) == []


def test_health_reports_serving_for_the_server_and_the_service(channel: grpc.Channel) -> None:
    # The typeshed HealthStub declares no methods: call the standard method by its path.
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    for name in ("", "tq.v1.TaskQueue"):
        reply = check(health_pb2.HealthCheckRequest(service=name), timeout=T)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    err = rpc_error(lambda: check(health_pb2.HealthCheckRequest(service="nope"), timeout=T))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_task_queue_service_and_its_schema(channel: grpc.Channel) -> None:
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tq.v1.TaskQueue"),
    ]
    replies = list(reflect(iter(requests), timeout=T))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"tq.v1.TaskQueue", "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto
