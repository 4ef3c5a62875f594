"""Worker inspect and control through REST and gRPC, against a real broker and a real
``tq worker`` process: each door inspects the worker, gives it each order, and is refused
what the TCP door refuses (an unknown worker, the only queue, a key without admin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.integration.test_worker_e2e import BROKER_SETTINGS, Env, exit_code, wait_for
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.client import Client
from tq.protocol import KeySpec
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(120)

ADMIN = new_api_key()
DOORS = {**BROKER_SETTINGS, "api.rest_enabled": True, "api.grpc_enabled": True}


class World(Env):
    """The broker (auth on), its doors and an admin client; workers run with the admin key."""

    def __init__(self, tmp_path: Path, broker: BrokerProcess) -> None:
        super().__init__(tmp_path, broker)
        self.client.close()
        self.client = Client(broker.url, api_key=ADMIN)
        self.rest = httpx.Client(
            base_url=f"http://127.0.0.1:{broker.ports['rest_port']}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}")
        self.grpc = TaskQueueStub(self.channel)

    def worker(self, *args: str, module: str = "it_handlers") -> Any:
        return super().worker("--api-key", ADMIN, *args, module=module)

    def close(self) -> None:
        super().close()
        self.rest.close()
        self.channel.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with BrokerProcess(tmp_path / "data", settings=DOORS, api_key=ADMIN) as broker:
        w = World(tmp_path, broker)
        try:
            yield w
        finally:
            w.close()


def call(w: World, method: str, request: object) -> Any:
    return getattr(w.grpc, method)(request, timeout=10, metadata=(("x-api-key", ADMIN),))


def test_rest_inspects_a_worker_and_gives_it_each_order(world: World) -> None:
    runs = world.submit("block", b"30", queue="a")
    worker = world.worker("--name", "w-rest", "--queues", "a", "--shutdown-timeout", "1")
    wait_for("the task to start", lambda: world.marks_of(runs, "started"))

    def running() -> dict[str, Any] | None:
        r = world.rest.get("/v1/workers/w-rest")
        return r.json() if r.status_code == 200 and r.json()["running"] == [runs] else None

    body = wait_for("a heartbeat saying it runs the task", running)
    assert (body["reserved"], body["orders"]) == ([], [])
    w = body["worker"]
    assert (w["queues"], w["running"], w["reserved"], w["draining"]) == (["a"], 1, 0, False)
    listed = world.rest.get("/v1/workers").json()["workers"]
    assert [x["reserved"] for x in listed if x["id"] == "w-rest"] == [0]

    r = world.rest.post("/v1/workers/w-rest/consume", json={"queue": "b"})
    assert r.status_code == 200, r.text
    order = r.json()["order"]
    assert (order["action"], order["queue"]) == ("consume", "b") and order["seq"] >= 1
    assert r.json()["pending"][-1] == order

    def queues() -> list[str] | None:
        found = world.rest.get("/v1/workers/w-rest").json()
        return found["worker"]["queues"] if not found["orders"] else None

    wait_for("the worker to take b", lambda: queues() == ["a", "b"])
    again = world.rest.post("/v1/workers/w-rest/consume", json={"queue": "b"})
    assert again.status_code == 200 and again.json()["order"] is None
    r = world.rest.post("/v1/workers/w-rest/stop-consuming", json={"queue": "a"})
    assert r.status_code == 200, r.text
    wait_for("the worker to leave a", lambda: queues() == ["b"])
    only = world.rest.post("/v1/workers/w-rest/stop-consuming", json={"queue": "b"})
    assert only.status_code == 422 and "only queue" in only.json()["error"]["message"]
    missing = world.rest.get("/v1/workers/w-nobody")
    assert (missing.status_code, missing.json()["error"]["name"]) == (404, "WORKER_NOT_FOUND")
    bad = world.rest.post("/v1/workers/w-rest/consume", json={"queue": ""})
    assert bad.status_code == 422

    _, reader = world.client.create_key(KeySpec(name="r", permissions=["read"]))
    denied = world.rest.post(
        "/v1/workers/w-rest/shutdown", headers={"Authorization": f"Bearer {reader}"}
    )
    assert denied.status_code == 403
    seen = world.rest.get("/v1/workers/w-rest", headers={"Authorization": f"Bearer {reader}"})
    assert seen.status_code == 200  # inspecting needs only read

    r = world.rest.post("/v1/workers/w-rest/shutdown")
    assert r.status_code == 200 and r.json()["order"]["action"] == "shutdown"
    assert exit_code(worker) == 0, world.log()
    assert world.rest.get("/v1/workers/w-rest").status_code == 404


def test_grpc_inspects_a_worker_and_gives_it_each_order(world: World) -> None:
    runs = world.submit("block", b"30", queue="a")
    worker = world.worker("--name", "w-grpc", "--queues", "a", "--shutdown-timeout", "1")
    wait_for("the task to start", lambda: world.marks_of(runs, "started"))

    def running() -> pb.WorkerDetail | None:
        found: pb.WorkerDetail = call(world, "InspectWorker", pb.WorkerRequest(id="w-grpc"))
        return found if list(found.running) == [runs] else None

    found = wait_for("a heartbeat saying it runs the task", running)
    assert (list(found.worker.queues), found.worker.running, found.worker.reserved) == (
        ["a"], 1, 0,
    )  # fmt: skip
    done = call(world, "ConsumeQueue", pb.WorkerQueueRequest(id="w-grpc", queue="b"))
    assert done.HasField("order") and (done.order.action, done.order.queue) == ("consume", "b")

    def queues() -> list[str] | None:
        found = call(world, "InspectWorker", pb.WorkerRequest(id="w-grpc"))
        return list(found.worker.queues) if not found.orders else None

    wait_for("the worker to take b", lambda: queues() == ["a", "b"])
    again = call(world, "ConsumeQueue", pb.WorkerQueueRequest(id="w-grpc", queue="b"))
    assert not again.HasField("order")
    call(world, "StopConsuming", pb.WorkerQueueRequest(id="w-grpc", queue="a"))
    wait_for("the worker to leave a", lambda: queues() == ["b"])
    with pytest.raises(grpc.RpcError) as only:
        call(world, "StopConsuming", pb.WorkerQueueRequest(id="w-grpc", queue="b"))
    assert only.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as missing:
        call(world, "InspectWorker", pb.WorkerRequest(id="w-nobody"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND

    stopped = call(world, "ShutdownWorker", pb.WorkerRequest(id="w-grpc"))
    assert stopped.order.action == "shutdown"
    assert exit_code(worker) == 0, world.log()
