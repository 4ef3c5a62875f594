"""Result lifetimes and expiry against a real broker: through the Python client, the CLI, REST
and gRPC. A task kept for result_ttl or failure_ttl is gone about that long after it ended,
and counted; a task whose expires_at passes in a queue nobody serves ends then, and a
subscriber sees it end."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tq.api._pb import tq_pb2 as pb
from tq.api._pb import tq_pb2_grpc as pb_grpc
from tq.client import Client, TaskOutcome
from tq.errors import NotFoundError, ValidationError
from tq.testing import BrokerProcess

from .cli_procs import run_tq, wait_for

pytestmark = pytest.mark.timeout(120)

SETTINGS = {
    "broker.scheduler_interval_s": 0.1,
    "api.rest_enabled": True,
    "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": True,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("ttl") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    with Client(broker.url) as c:
        yield c


@pytest.fixture
def queue() -> str:
    """A queue of the test's own: nobody serves it unless the test does."""
    return f"q-{uuid.uuid4().hex[:12]}"


def run_one(client: Client, queue: str, *, ok: bool) -> None:
    """Claim the one task of ``queue`` and complete it (``ok``) or fail it for good."""
    claimed = wait_for("a task to claim", lambda: client.claim("w", [queue], max_tasks=1) or None)
    t = claimed[0]
    outcome = TaskOutcome(
        task_id=t.id, lease_token=t.lease_token, ok=ok, result=b"done" if ok else None,
        error=None if ok else "boom", retry=False,
    )  # fmt: skip
    assert client.report([outcome]) == [0]


def gone(client: Client, task_id: str) -> bool | None:
    try:
        client.status(task_id)
    except NotFoundError:
        return True
    return None


def total(client: Client, name: str) -> int:
    return client.stats().totals.get(name, 0)


def metric(broker: BrokerProcess, outcome: str) -> float:
    """``tq_tasks_total{outcome=...}`` as the broker's /metrics shows it."""
    text = httpx.get(f"http://127.0.0.1:{broker.ports['metrics_port']}/metrics", timeout=10).text
    line = f'tq_tasks_total{{outcome="{outcome}"}} '
    return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])


def test_a_completed_task_with_result_ttl_is_deleted_about_then_and_counted(
    broker: BrokerProcess, client: Client, queue: str
) -> None:
    before = total(client, "results_expired")
    task_id = client.submit("job", queue=queue, result_ttl=1.0)
    run_one(client, queue, ok=True)
    info = client.status(task_id)
    assert info.state == "completed" and info.result == b"done"
    assert info.completed_at is not None and info.purge_at == pytest.approx(info.completed_at + 1)
    assert info.result_ttl == 1.0
    wait_for("the completed task to be purged", lambda: gone(client, task_id), timeout=15)
    purged_after = time.time() - info.completed_at
    assert purged_after >= 1.0
    assert total(client, "results_expired") == before + 1
    assert metric(broker, "results_expired") == before + 1


def test_a_dead_lettered_task_with_failure_ttl_is_deleted_about_then_and_counted(
    client: Client, queue: str
) -> None:
    before = total(client, "results_expired")
    task_id = client.submit("job", queue=queue, failure_ttl=1.0, result_ttl=3600)
    run_one(client, queue, ok=False)
    info = client.status(task_id)
    assert info.state == "dead_letter" and info.purge_at is not None
    assert info.purge_at == pytest.approx(time.time() + 1, abs=1)
    wait_for("the dead letter to be purged", lambda: gone(client, task_id), timeout=15)
    assert total(client, "results_expired") == before + 1


def test_a_task_without_a_ttl_is_kept(client: Client, queue: str) -> None:
    task_id = client.submit("job", queue=queue)
    run_one(client, queue, ok=True)
    info = client.status(task_id)
    assert (info.state, info.purge_at, info.result_ttl) == ("completed", None, None)


def test_an_expired_task_in_an_unserved_queue_ends_at_its_time_and_a_subscriber_sees_it(
    broker: BrokerProcess, client: Client, queue: str
) -> None:
    before = total(client, "expired")
    expires_at = time.time() + 1.0
    task_id = client.submit("job", queue=queue, expires_at=expires_at)
    dependant = client.submit("after", queue=queue, depends_on=[task_id])
    with client.subscribe(queues=[queue]) as events:
        seen = {}
        for event in events:
            seen[event.task_id] = event
            if len(seen) == 2:
                break
    ended = client.status(task_id)
    assert ended.state == "cancelled"
    assert ended.error == "expired before it started"
    assert ended.completed_at is not None and ended.completed_at >= expires_at
    assert ended.completed_at - expires_at < 5  # at its time, not when a worker came by
    assert {e.state for e in seen.values()} == {"cancelled", "dead_letter"}
    assert client.status(dependant).state == "dead_letter"  # dependants follow the usual rule
    assert total(client, "expired") == before + 1
    assert metric(broker, "expired") == before + 1


def test_a_negative_ttl_is_refused_naming_the_field(client: Client, queue: str) -> None:
    with pytest.raises(ValidationError, match="result_ttl"):
        client.submit("job", queue=queue, result_ttl=-1)
    with pytest.raises(ValidationError, match="failure_ttl"):
        client.submit("job", queue=queue, failure_ttl=float("inf"))


def test_the_cli_submits_ttls_and_an_expiry(broker: BrokerProcess, queue: str) -> None:
    out = run_tq(
        "--output", "json", "submit", "job", "x", "--queue", queue, "--result-ttl", "1",
        "--failure-ttl", "60", "--expires", "1h", url=broker.url,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    task_id = json.loads(out.stdout)["id"]
    with Client(broker.url) as client:
        info = client.status(task_id)
        assert (info.result_ttl, info.failure_ttl) == (1.0, 60.0)
        assert info.expires_at == pytest.approx(time.time() + 3600, abs=60)
        run_one(client, queue, ok=True)
        wait_for("the CLI's task to be purged", lambda: gone(client, task_id), timeout=15)
    refused = run_tq("submit", "job", "--result-ttl", "-5", url=broker.url)
    assert refused.returncode != 0
    assert "--result-ttl" in refused.stderr


def test_rest_takes_and_shows_the_ttls_and_a_purged_task_is_404(
    broker: BrokerProcess, client: Client, queue: str
) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['rest_port']}") as http:
        r = http.post(
            "/v1/tasks",
            json={"task_type": "job", "queue": queue, "result_ttl": 1, "failure_ttl": 30},
        )
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        run_one(client, queue, ok=True)
        task = http.get(f"/v1/tasks/{task_id}").json()
        assert (task["result_ttl"], task["failure_ttl"]) == (1.0, 30.0)
        assert task["purge_at"] == pytest.approx(task["completed_at"] + 1)
        assert task["purge_at_rfc3339"].endswith("Z")
        wait_for(
            "the REST task to be purged",
            lambda: True if http.get(f"/v1/tasks/{task_id}").status_code == 404 else None,
            timeout=15,
        )
        bad = http.post("/v1/tasks", json={"task_type": "job", "failure_ttl": -1})
        assert bad.status_code == 422
        assert "failure_ttl" in bad.text


def test_grpc_takes_and_shows_the_ttls(broker: BrokerProcess, client: Client, queue: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as channel:
        stub = pb_grpc.TaskQueueStub(channel)
        spec = pb.TaskSpec(task_type="job", queue=queue, result_ttl=1.0, failure_ttl=30.0)
        task_id = stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=10).id
        run_one(client, queue, ok=True)
        task = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=10)
        assert (task.result_ttl, task.failure_ttl) == (1.0, 30.0)
        assert task.purge_at == pytest.approx(task.completed_at + 1)

        def purged() -> bool | None:
            try:
                stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=10)
            except grpc.RpcError as e:
                return True if e.code() is grpc.StatusCode.NOT_FOUND else None
            return None

        wait_for("the gRPC task to be purged", purged, timeout=15)
        bad = pb.TaskSpec(task_type="job", queue=queue, result_ttl=-1.0)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitTask(pb.SubmitTaskRequest(task=bad), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "result_ttl" in (refused.value.details() or "")


def test_the_index_survives_a_kill_and_the_restarted_broker_purges_on_time(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with BrokerProcess(data, settings=SETTINGS) as b, Client(b.url) as client:
        kept = client.submit("job", queue="q", result_ttl=3600)
        soon = client.submit("job", queue="q", result_ttl=2)
        run_one(client, "q", ok=True)
        run_one(client, "q", ok=True)
        b.kill()
    with BrokerProcess(data, settings=SETTINGS) as b, Client(b.url) as client:
        wait_for("the short-lived task to be purged", lambda: gone(client, soon), timeout=15)
        assert client.status(kept).state == "completed"
        assert total(client, "results_expired") == 1
