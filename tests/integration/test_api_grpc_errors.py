"""Bad input over gRPC, against a real broker: every refusal is a gRPC status with the stable
tq code in trailing metadata ``tq-error-code`` (INVALID_ARGUMENT / NOT_FOUND / ...), never
UNKNOWN or INTERNAL, and never a traceback in the details."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.integration.test_api_grpc import GRPC_ONLY, UNKNOWN_ID, T, rpc_error, tq_code
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

PAYLOAD_LIMIT = 1024
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskQueueStub]:
    limits = {
        "broker.max_payload_size_bytes": PAYLOAD_LIMIT,
        "api.max_request_body_bytes": BODY_LIMIT,
    }
    data = tmp_path_factory.mktemp("grpc") / "d"
    with (
        BrokerProcess(data, settings=GRPC_ONLY | limits) as b,
        grpc.insecure_channel(f"127.0.0.1:{b.ports['grpc_port']}") as channel,
    ):
        yield TaskQueueStub(channel)


BAD_SUBMITS = {
    "priority out of range": pb.TaskSpec(task_type="echo", priority=256),
    "no task type": pb.TaskSpec(),
    "bad id": pb.TaskSpec(task_type="echo", id="not-a-uuid"),
    "bad dependency id": pb.TaskSpec(task_type="echo", depends_on=["x"]),
    "negative delay": pb.TaskSpec(task_type="echo", delay=-1.0),
    "delay and scheduled_at": pb.TaskSpec(task_type="echo", delay=1.0, scheduled_at=1.0),
    "empty queue name": pb.TaskSpec(task_type="echo", queue=""),
    "jitter above 1": pb.TaskSpec(task_type="echo", retry=pb.RetryPolicy(factor=2, jitter=2)),
    # Doubles may carry inf and nan: the same bounds as the TCP protocol and REST refuse them.
    "infinite delay": pb.TaskSpec(task_type="echo", delay=float("inf")),
    "nan timeout": pb.TaskSpec(task_type="echo", timeout=float("nan")),
    "infinite scheduled_at": pb.TaskSpec(task_type="echo", scheduled_at=float("inf")),
    "expires_at after 9999": pb.TaskSpec(task_type="echo", expires_at=3e11),
    "infinite backoff base": pb.TaskSpec(
        task_type="echo", retry=pb.RetryPolicy(base=float("inf"), factor=2)
    ),
    "backoff factor above 1000": pb.TaskSpec(task_type="echo", retry=pb.RetryPolicy(factor=1e4)),
}


@pytest.mark.parametrize("spec", BAD_SUBMITS.values(), ids=BAD_SUBMITS.keys())
def test_a_bad_task_spec_is_invalid_argument(stub: TaskQueueStub, spec: pb.TaskSpec) -> None:
    err = rpc_error(lambda: stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=T))
    assert (err.code(), tq_code(err)) == (grpc.StatusCode.INVALID_ARGUMENT, 2000)
    assert "task" in (err.details() or "")


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BAD_CALLS = {
    "malformed id": ("GetTask", pb.GetTaskRequest(id="nope"), INVALID, 2000),
    "missing id": ("GetTask", pb.GetTaskRequest(), INVALID, 2000),
    "unknown id": ("GetTask", pb.GetTaskRequest(id=UNKNOWN_ID), NOT_FOUND, 3000),
    "cancel unknown": ("CancelTask", pb.TaskRequest(id=UNKNOWN_ID), NOT_FOUND, 3000),
    "retry unknown": ("RetryTask", pb.TaskRequest(id=UNKNOWN_ID), NOT_FOUND, 3000),
    "delete unknown": ("DeleteTask", pb.TaskRequest(id=UNKNOWN_ID), NOT_FOUND, 3000),
    "bulk malformed id": ("CancelTasks", pb.BulkRequest(ids=["x"]), INVALID, 2000),
    "limit too big": ("ListTasks", pb.ListTasksRequest(limit=5000), INVALID, 2000),
    "unknown state": (
        "ListTasks", pb.ListTasksRequest(filter=pb.TaskFilter(state=99)), INVALID, 2000,  # type: ignore[arg-type]
    ),
    "no tasks": ("SubmitTasks", pb.SubmitTasksRequest(), INVALID, 2000),
    "payload too large": (
        "SubmitTask",
        pb.SubmitTaskRequest(task=pb.TaskSpec(task_type="e", payload=b"x" * (PAYLOAD_LIMIT + 1))),
        INVALID, 2001,
    ),
    "unknown dependency": (
        "SubmitTask",
        pb.SubmitTaskRequest(task=pb.TaskSpec(task_type="e", depends_on=[UNKNOWN_ID])),
        grpc.StatusCode.FAILED_PRECONDITION, 3004,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_", "status", "code"), BAD_CALLS.values(), ids=BAD_CALLS.keys()
)
def test_bad_input_gets_its_status_and_stable_code(
    stub: TaskQueueStub, method: str, request_: object, status: grpc.StatusCode, code: int
) -> None:
    err = rpc_error(lambda: getattr(stub, method)(request_, timeout=T))
    assert (err.code(), tq_code(err)) == (status, code), err.details()
    assert "Traceback" not in (err.details() or "")


def test_a_request_above_the_body_limit_is_refused_by_grpc(stub: TaskQueueStub) -> None:
    big = pb.TaskSpec(task_type="echo", payload=b"x" * (BODY_LIMIT + 1))
    err = rpc_error(lambda: stub.SubmitTask(pb.SubmitTaskRequest(task=big), timeout=T))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
