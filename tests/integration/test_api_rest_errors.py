"""Bad input over REST gets a 4xx in the one error shape with its stable code, never a 500:
malformed JSON, wrong types, out-of-range values, unknown ids and routes, oversize bodies."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

BODY_LIMIT = 64 * 1024
PAYLOAD_LIMIT = 1000
SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
    "api.max_request_body_bytes": BODY_LIMIT,
    "broker.max_payload_size_bytes": PAYLOAD_LIMIT,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("errors") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def url(broker: BrokerProcess) -> str:
    return f"http://127.0.0.1:{broker.ports['rest_port']}"


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def error_of(r: httpx.Response, status: int, name: str) -> str:
    """The message of an error response, after checking its status, shape and code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "name", "message"}
    assert err["name"] == name
    assert isinstance(err["code"], int)
    message: str = err["message"]
    assert "Traceback" not in message
    return message


def test_malformed_json_is_400_protocol_error(http: httpx.Client) -> None:
    r = http.post(
        "/v1/tasks", content=b'{"task_type": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in error_of(r, 400, "PROTOCOL_ERROR")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": 5}, "task_type"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": "x" * 300}, "task_type"),
        ({"task_type": "t", "priority": "high"}, "priority"),
        ({"task_type": "t", "priority": 256}, "priority"),
        ({"task_type": "t", "delay": -1}, "delay"),
        ({"task_type": "t", "max_retries": 10**30}, "max_retries"),
        ({"task_type": "t", "timeout": 0}, "timeout"),
        ({"task_type": "t", "payload_base64": "not base64!"}, "payload_base64"),
        ({"task_type": "t", "payload": "a", "payload_base64": "YQ=="}, "not both"),
        ({"task_type": "t", "depends_on": ["nope"]}, "depends_on"),
        ({"task_type": "t", "tags": {"k": 1}}, "tags"),
        ({"task_type": "t", "scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"task_type": "t", "colour": "red"}, "colour"),
        ({"task_type": "t", "retry": {"factor": 0.5}}, "retry.factor"),
        ([{"task_type": "t"}], "body"),
        ({}, "task_type"),
    ],
)
def test_a_bad_field_is_422_naming_it(http: httpx.Client, body: Any, field: str) -> None:
    assert field in error_of(http.post("/v1/tasks", json=body), 422, "INVALID_ARGUMENT")


def test_a_body_not_sent_as_json_says_so(http: httpx.Client) -> None:
    form = http.post("/v1/tasks", content=b"task_type=t", headers={"content-type": "text/plain"})
    assert "Content-Type: application/json" in error_of(form, 422, "INVALID_ARGUMENT")


def test_nan_and_lone_surrogates_are_refused(http: httpx.Client) -> None:
    nan = json.dumps({"task_type": "t", "delay": float("nan")})  # Python writes NaN
    r = http.post("/v1/tasks", content=nan, headers={"content-type": "application/json"})
    assert "delay" in error_of(r, 422, "INVALID_ARGUMENT")
    surrogate = '{"task_type": "\\ud800"}'
    r = http.post("/v1/tasks", content=surrogate, headers={"content-type": "application/json"})
    assert "task_type" in error_of(r, 422, "INVALID_ARGUMENT")


def test_rules_the_service_enforces_keep_their_codes(http: httpx.Client) -> None:
    both = {"task_type": "t", "delay": 5, "scheduled_at": 2_000_000_000}
    assert "delay or scheduled_at" in error_of(
        http.post("/v1/tasks", json=both), 422, "INVALID_ARGUMENT"
    )
    orphan = {"task_type": "t", "depends_on": [str(uuid.uuid4())]}
    error_of(http.post("/v1/tasks", json=orphan), 409, "DEPENDENCY_NOT_FOUND")
    big = {"task_type": "t", "payload": "x" * (PAYLOAD_LIMIT + 1)}
    assert str(PAYLOAD_LIMIT) in error_of(
        http.post("/v1/tasks", json=big), 413, "PAYLOAD_TOO_LARGE"
    )


def test_batch_bounds(http: httpx.Client) -> None:
    error_of(http.post("/v1/tasks/batch", json={"tasks": []}), 422, "INVALID_ARGUMENT")
    many = {"tasks": [{"task_type": "t"}] * 1001}
    assert "tasks" in error_of(http.post("/v1/tasks/batch", json=many), 422, "INVALID_ARGUMENT")
    one_bad = {"tasks": [{"task_type": "t"}, {"task_type": "t", "priority": -1}]}
    message = error_of(http.post("/v1/tasks/batch", json=one_bad), 422, "INVALID_ARGUMENT")
    assert "tasks.1.priority" in message


def test_an_oversize_body_is_413_before_it_is_parsed(http: httpx.Client) -> None:
    body = b"[" + b"1," * BODY_LIMIT + b"1]"
    r = http.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert str(BODY_LIMIT) in error_of(r, 413, "PAYLOAD_TOO_LARGE")


def test_an_oversize_chunked_body_is_413(url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BODY_LIMIT // 1000 + 10):
            yield b" " * 1000

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            return await client.post("/v1/tasks", content=chunks())

    r = asyncio.run(asyncio.wait_for(post(), 30))
    assert r.request.headers["transfer-encoding"] == "chunked"  # no length to check up front
    error_of(r, 413, "PAYLOAD_TOO_LARGE")


def test_a_bad_task_id_in_the_path_is_422(http: httpx.Client) -> None:
    assert "task_id" in error_of(http.get("/v1/tasks/not-a-uuid"), 422, "INVALID_ARGUMENT")
    assert "task_id" in error_of(http.post("/v1/tasks/123/cancel"), 422, "INVALID_ARGUMENT")


def test_an_unknown_route_is_404_route_not_found(http: httpx.Client) -> None:
    for path in ("/v1/nothing", "/v1/tasks/bulk", "/v2/tasks"):
        assert path in error_of(http.get(path), 404, "ROUTE_NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/stats", "GET"),
        ("GET", "/v1/tasks/batch", "POST"),  # not a task id: the batch route's own 405
        ("DELETE", "/v1/tasks/bulk/cancel", "POST"),
        ("OPTIONS", f"/v1/tasks/{uuid.UUID(int=7)}", "DELETE, GET"),  # every route of the path
        ("PATCH", "/v1/tasks", "GET, POST"),
    ],
)
def test_a_method_the_path_does_not_serve_is_405_listing_those_it_does(
    http: httpx.Client, method: str, path: str, allow: str
) -> None:
    r = http.request(method, path)
    message = error_of(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == allow
    assert method in message
    assert allow in message


def test_the_broker_still_serves_after_all_of_that(http: httpx.Client) -> None:
    assert http.get("/readyz").status_code == 200
    assert http.post("/v1/tasks", json={"task_type": "t"}).status_code == 201
