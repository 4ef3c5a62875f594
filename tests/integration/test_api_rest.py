"""REST over real sockets against a real broker process: every task route, state routes,
health, readiness and the OpenAPI document, driven with httpx."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}
FAR = 3600  # a delay that keeps a task scheduled (never claimed) for the whole test


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("rest") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def http(broker: BrokerProcess) -> Iterator[httpx.Client]:
    url = f"http://127.0.0.1:{broker.ports['rest_port']}"
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def submit(http: httpx.Client, **task: Any) -> str:
    r = http.post("/v1/tasks", json={"task_type": "echo", **task})
    assert r.status_code == 201, r.text
    task_id: str = r.json()["id"]
    return task_id


def error_of(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "name", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_a_submitted_task_is_pending_and_its_id_is_a_canonical_uuid(http: httpx.Client) -> None:
    r = http.post("/v1/tasks", json={"task_type": "echo", "payload": "héllo", "queue": "q1"})
    assert r.status_code == 201
    body = r.json()
    assert body["created"] is True
    assert str(uuid.UUID(body["id"])) == body["id"]
    task = http.get(f"/v1/tasks/{body['id']}").json()
    assert task["state"] == "pending"
    assert task["queue"] == "q1"
    assert task["payload"] is None  # only with include_payload


def test_get_with_include_payload_returns_text_and_base64(http: httpx.Client) -> None:
    text_id = submit(http, payload="héllo", delay=FAR)
    binary = bytes([0, 255, 128, 10])
    bin_id = submit(http, payload_base64=base64.b64encode(binary).decode(), delay=FAR)
    text = http.get(f"/v1/tasks/{text_id}", params={"include_payload": "true"}).json()
    assert text["payload"] == "héllo"
    assert base64.b64decode(text["payload_base64"]) == "héllo".encode()
    raw = http.get(f"/v1/tasks/{bin_id}", params={"include_payload": True}).json()
    assert raw["payload"] is None  # not UTF-8: only the exact base64 form
    assert base64.b64decode(raw["payload_base64"]) == binary


def test_every_submit_field_reaches_the_task(http: httpx.Client) -> None:
    dep = submit(http, delay=FAR)
    task_id = submit(
        http, queue="fields", priority=250, max_retries=7, timeout=12.5, delay=FAR,
        tags={"team": "core"}, depends_on=[dep], retry={"base": 2, "factor": 3},
        expires_at="2100-01-01T00:00:00Z",
    )  # fmt: skip
    task = http.get(f"/v1/tasks/{task_id}").json()
    assert task["priority"] == 250
    assert task["max_retries"] == 7
    assert task["timeout"] == 12.5
    assert task["tags"] == {"team": "core"}
    assert task["depends_on"] == [dep]
    assert task["expires_at"] == 4102444800.0
    assert task["state"] == "scheduled"


def test_a_client_chosen_id_is_kept(http: httpx.Client) -> None:
    chosen = str(uuid.uuid4())
    assert submit(http, id=chosen, delay=FAR) == chosen
    again = http.post("/v1/tasks", json={"task_type": "echo", "id": chosen})
    assert again.status_code == 409
    assert error_of(again)["name"] == "TASK_ALREADY_EXISTS"


def test_an_idempotent_duplicate_answers_200_with_the_existing_id(http: httpx.Client) -> None:
    key = f"k-{uuid.uuid4()}"
    first = http.post("/v1/tasks", json={"task_type": "echo", "idempotency_key": key})
    second = http.post("/v1/tasks", json={"task_type": "echo", "idempotency_key": key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == {"id": first.json()["id"], "created": False}


def test_a_batch_is_submitted_in_order(http: httpx.Client) -> None:
    tasks = [{"task_type": "echo", "payload": str(i), "delay": FAR} for i in range(5)]
    r = http.post("/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201
    ids = [t["id"] for t in r.json()["tasks"]]
    assert len(set(ids)) == 5
    payloads = [
        http.get(f"/v1/tasks/{i}", params={"include_payload": True}).json()["payload"] for i in ids
    ]
    assert payloads == ["0", "1", "2", "3", "4"]


def test_cancel_then_cancel_again_is_a_conflict(http: httpx.Client) -> None:
    task_id = submit(http, delay=FAR)
    r = http.post(f"/v1/tasks/{task_id}/cancel")
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled"
    again = http.post(f"/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409
    err = error_of(again)
    assert (err["code"], err["name"]) == (3002, "INVALID_STATE")
    assert task_id in err["message"]
    assert "cancelled" in err["message"]


def dead_lettered(http: httpx.Client) -> str:
    """A dead-lettered task without a worker: its dependency is cancelled."""
    dep = submit(http, delay=FAR)
    task_id = submit(http, depends_on=[dep])
    assert http.post(f"/v1/tasks/{dep}/cancel").status_code == 200
    assert http.get(f"/v1/tasks/{task_id}").json()["state"] == "dead_letter"
    return task_id


def test_retry_requeues_a_dead_lettered_task(http: httpx.Client) -> None:
    task_id = dead_lettered(http)
    r = http.post(f"/v1/tasks/{task_id}/retry")
    assert r.status_code == 200
    assert r.json()["state"] == "pending"
    again = http.post(f"/v1/tasks/{task_id}/retry")
    assert again.status_code == 409
    assert error_of(again)["name"] == "INVALID_STATE"


def test_delete_removes_a_finished_task_and_refuses_a_live_one(http: httpx.Client) -> None:
    live = submit(http, delay=FAR)
    refused = http.delete(f"/v1/tasks/{live}")
    assert refused.status_code == 409
    assert error_of(refused)["name"] == "INVALID_STATE"
    http.post(f"/v1/tasks/{live}/cancel")
    r = http.delete(f"/v1/tasks/{live}")
    assert r.status_code == 204
    assert r.content == b""
    gone = http.get(f"/v1/tasks/{live}")
    assert gone.status_code == 404
    assert error_of(gone)["name"] == "TASK_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/{id}"),
        ("POST", "/v1/tasks/{id}/cancel"),
        ("POST", "/v1/tasks/{id}/retry"),
        ("DELETE", "/v1/tasks/{id}"),
    ],
)
def test_an_unknown_id_is_404_task_not_found(http: httpx.Client, method: str, path: str) -> None:
    unknown = str(uuid.uuid4())
    r = http.request(method, path.format(id=unknown))
    assert r.status_code == 404
    err = error_of(r)
    assert (err["code"], err["name"]) == (3000, "TASK_NOT_FOUND")
    assert unknown in err["message"]


def test_stats_and_queues_count_pending_tasks_per_tier(http: httpx.Client) -> None:
    queue = f"depth-{uuid.uuid4().hex[:8]}"
    for priority in (250, 150, 150, 10):
        submit(http, queue=queue, priority=priority)
    stats = http.get("/v1/stats").json()
    assert stats["queues"][queue] == {
        "high": 1, "normal": 2, "low": 1, "scheduled": 0, "in_progress": 0, "paused": False,
    }  # fmt: skip
    assert stats["totals"]["submitted"] >= 4
    assert stats["node_id"]
    queues = {q["name"]: q for q in http.get("/v1/queues").json()["queues"]}
    assert queues[queue] == {
        "name": queue, "high": 1, "normal": 2, "low": 1, "pending": 4, "scheduled": 0,
        "in_progress": 0, "paused": False,
    }  # fmt: skip


def test_workers_is_a_list(http: httpx.Client) -> None:
    r = http.get("/v1/workers")
    assert r.status_code == 200
    assert isinstance(r.json()["workers"], list)


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}


def test_openapi_documents_every_route_and_the_error_shape(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/v1/tasks", "/v1/tasks/batch", "/v1/tasks/{task_id}", "/v1/tasks/{task_id}/cancel",
        "/v1/tasks/{task_id}/retry", "/v1/tasks/bulk/{action}", "/v1/stats", "/v1/workers",
        "/v1/queues", "/healthz", "/readyz",
    ):  # fmt: skip
        assert path in paths, path
    get_task = paths["/v1/tasks/{task_id}"]["get"]["responses"]
    assert get_task["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    description = doc["info"]["description"]
    for rule in ("RFC 3339", "`10m` for ten minutes ago", "_rfc3339", "query parameters", "/ws"):
        assert rule in description
    assert http.get("/docs").status_code == 200
