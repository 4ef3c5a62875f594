"""Priority aging through every door of a real broker: a task opts out with the CLI's
``--no-aging``, REST's ``"aging": false`` and gRPC's ``aging = false``, and each door shows
``aging`` and the effective priority a waiting task has reached (docs/priority-aging.md)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.integration.cli_procs import run_tq
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

T = 10.0  # the deadline of every call
#: +50 every 0.2 s: a task at 0 reaches 100 after 0.4 s of waiting.
SETTINGS = {
    "broker.priority_aging_interval_s": 0.2,
    "broker.priority_aging_step": 50,
    "api.rest_enabled": True,
    "api.grpc_enabled": True,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("aging-doors") / "d", settings=SETTINGS) as b:
        yield b


def queue() -> str:
    return f"aging-{uuid.uuid4().hex[:8]}"


def risen(read: Callable[[], tuple[bool, int | None]]) -> tuple[bool, int | None]:
    """``read()`` (aging, effective priority) once the effective priority passed 100, or
    what it says after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        aging, effective = read()
        if (effective or 0) >= 100 or time.monotonic() > deadline:
            return aging, effective
        time.sleep(0.05)  # polling a condition, within the deadline above


def test_the_cli_submits_with_no_aging_and_status_shows_both(broker: BrokerProcess) -> None:
    q = queue()

    def cli(*args: str) -> Any:
        done = run_tq("-o", "json", *args, url=broker.url)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    aged = cli("submit", "echo", "{}", "-q", q, "-p", "0")["id"]
    fixed = cli("submit", "echo", "{}", "-q", q, "-p", "0", "--no-aging")["id"]

    def status(task_id: str) -> tuple[bool, int | None]:
        (info,) = cli("status", task_id)
        return info["aging"], info["effective_priority"]

    aging, effective = risen(lambda: status(aged))
    assert aging is True and effective is not None and effective >= 100
    assert status(fixed) == (False, 0)


def test_rest_submits_with_aging_false_and_get_shows_both(broker: BrokerProcess) -> None:
    q = queue()
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['rest_port']}", timeout=T) as http:

        def submit(**extra: Any) -> str:
            r = http.post(
                "/v1/tasks", json={"task_type": "echo", "queue": q, "priority": 0, **extra}
            )
            assert r.status_code == 201, r.text
            task_id: str = r.json()["id"]
            return task_id

        def get(task_id: str) -> tuple[bool, int | None]:
            body = http.get(f"/v1/tasks/{task_id}").json()
            return body["aging"], body["effective_priority"]

        aged, fixed = submit(), submit(aging=False)
        aging, effective = risen(lambda: get(aged))
        assert aging is True and effective is not None and effective >= 100
        assert get(fixed) == (False, 0)
        listed = http.get("/v1/tasks", params={"queue": q}).json()["tasks"]
        assert {t["id"]: t["aging"] for t in listed} == {aged: True, fixed: False}
        for bad in ("sometimes", 0, "false"):  # a boolean, not something that could be one
            r = http.post("/v1/tasks", json={"task_type": "echo", "aging": bad})
            assert r.status_code == 422 and "aging" in r.text, (bad, r.text)


def test_grpc_submits_with_aging_false_and_get_task_shows_both(broker: BrokerProcess) -> None:
    q = queue()
    with grpc.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as channel:
        stub = TaskQueueStub(channel)

        def submit(**extra: Any) -> str:
            spec = pb.TaskSpec(task_type="echo", queue=q, priority=0, **extra)
            reply: pb.SubmitTaskResponse = stub.SubmitTask(
                pb.SubmitTaskRequest(task=spec), timeout=T
            )
            return reply.id

        def get(task_id: str) -> tuple[bool, int | None]:
            task = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=T)
            assert task.HasField("aging")
            return task.aging, task.effective_priority if task.HasField(
                "effective_priority"
            ) else None

        aged, fixed = submit(), submit(aging=False)
        aging, effective = risen(lambda: get(aged))
        assert aging is True and effective is not None and effective >= 100
        assert get(fixed) == (False, 0)
        cancelled = stub.CancelTask(pb.TaskRequest(id=aged), timeout=T)
        assert not cancelled.HasField("effective_priority")  # not pending any more
