"""Schedules over gRPC against a real broker, through the generated stubs: create, list, get,
pause, resume, delete, a firing's task, and the errors naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, cast

import grpc
import pytest

from tests.integration.cli_procs import wait_for
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)
T = 10.0
GRPC_ONLY: dict[str, object] = {
    "api.grpc_enabled": True, "api.rest_enabled": False, "api.websocket_enabled": False,
    "api.dashboard_enabled": False, "monitoring.prometheus_enabled": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskQueueStub]:
    with (
        BrokerProcess(tmp_path_factory.mktemp("grpc-sched") / "d", settings=GRPC_ONLY) as b,
        grpc.insecure_channel(f"127.0.0.1:{b.ports['grpc_port']}") as ch,
    ):
        yield TaskQueueStub(ch)


class Failed(Protocol):
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> list[tuple[str, str]] | None: ...


def rpc_error(call: Callable[[], object]) -> Failed:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return cast(Failed, info.value)


def tq_code(err: Failed) -> str:
    return dict(err.trailing_metadata() or ())["tq-error-code"]


def test_a_schedule_through_every_rpc(stub: TaskQueueStub) -> None:
    spec = pb.ScheduleSpec(name="g-nightly", cron="15 2 * * *", timezone="Asia/Tokyo",
                           task_type="g.nightly", queue="g", payload=b"\x00\x01", priority=10,
                           tags={"k": "v"}, missed="all")  # fmt: skip
    made = stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=T)
    assert made.spec.cron == "15 2 * * *" and made.spec.timezone == "Asia/Tokyo"
    assert made.spec.payload == b"\x00\x01" and made.spec.missed == "all"
    assert made.HasField("next_at") and not made.HasField("last_fired_at") and made.fired == 0
    listed = stub.ListSchedules(pb.ListSchedulesRequest(), timeout=T).schedules
    assert [s.spec.name for s in listed] == ["g-nightly"]
    assert stub.GetSchedule(pb.ScheduleRequest(name="g-nightly"), timeout=T) == made
    taken = rpc_error(lambda: stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec)))
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS and tq_code(taken) == "3008"
    same = stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec, replace=True), timeout=T)
    assert same.next_at == made.next_at
    paused = stub.PauseSchedule(pb.ScheduleRequest(name="g-nightly"), timeout=T)
    assert paused.spec.paused and not paused.HasField("next_at")
    resumed = stub.ResumeSchedule(pb.ScheduleRequest(name="g-nightly"), timeout=T)
    assert not resumed.spec.paused and resumed.HasField("next_at")
    gone = stub.DeleteSchedule(pb.ScheduleRequest(name="g-nightly"), timeout=T)
    assert gone.spec.name == "g-nightly"
    missing = rpc_error(lambda: stub.GetSchedule(pb.ScheduleRequest(name="g-nightly"), timeout=T))
    assert missing.code() is grpc.StatusCode.NOT_FOUND and tq_code(missing) == "3009"


def test_an_interval_schedule_fires_a_task(stub: TaskQueueStub) -> None:
    spec = pb.ScheduleSpec(name="g-beat", interval=1, task_type="g.beat", queue="g-beat")
    made = stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=T)

    def fired() -> list[pb.Task] | None:
        found = stub.ListTasks(
            pb.ListTasksRequest(filter=pb.TaskFilter(task_type="g.beat")), timeout=T
        ).tasks
        return list(found) or None

    (first, *_) = wait_for("a firing", fired)
    assert first.tags["tq.schedule"] == "g-beat" and first.scheduled_at == made.next_at
    stub.DeleteSchedule(pb.ScheduleRequest(name="g-beat"), timeout=T)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"cron": "0 25 * * *"}, "cron: '0 25 * * *' is not a valid cron expression"),
        ({"cron": "@daily", "timezone": "Nope/Nope"}, "timezone: unknown time zone"),
        ({"cron": "@daily", "interval": 9}, "cron, interval: give exactly one"),
        ({}, "cron, interval: give exactly one"),
        ({"interval": 0.2}, "schedule.interval"),
        ({"interval": 5, "missed": "twice"}, "schedule.missed"),
    ],
)
def test_a_bad_schedule_is_invalid_argument_naming_the_field(
    stub: TaskQueueStub, fields: dict[str, object], needle: str
) -> None:
    spec = pb.ScheduleSpec(name="g-bad", task_type="g.bad", **fields)  # type: ignore[arg-type]
    err = rpc_error(lambda: stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=T))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.details() or "")
