"""What the OpenAPI document promises is what a real broker does, case by case: a body the
schema declares valid is accepted and one it declares invalid is refused (exclusive fields,
formats, bounds); unknown query parameters are refused as unknown body fields are; times are
taken and shown as the CLI takes and shows them; ``GET /ws`` without an upgrade is a 426;
every write declares the 503 NOT_LEADER body a cluster follower answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tq.api.http_errors import tq_error_response
from tq.core.times import format_rfc3339
from tq.errors import NotLeaderError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}
FAR = 3600


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("contract") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def http(broker: BrokerProcess) -> Iterator[httpx.Client]:
    url = f"http://127.0.0.1:{broker.ports['rest_port']}"
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def body_schema(doc: dict[str, Any], path: str) -> jsonschema_rs.Validator:
    """The validator of a route's JSON body, as the published document declares it."""
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for(
        {**body, "components": doc["components"]}, validate_formats=True
    )


A_TASK = {"task_type": "t", "delay": FAR}
SUBMITS: list[tuple[dict[str, Any], bool]] = [
    ({**A_TASK, "scheduled_at": 2e9}, False),  # delay and scheduled_at: one or the other
    ({**A_TASK, "scheduled_at": None}, True),
    ({"task_type": "t", "scheduled_at": "1969-07-20T20:17:40Z"}, True),  # past: runs now
    ({"task_type": "t", "expires_at": "1955-11-05T06:00:00-08:00"}, True),
    ({"task_type": "t", "scheduled_at": "2100-01-01T00:00:00"}, False),  # no offset
    ({"task_type": "t", "scheduled_at": "10m"}, False),  # an age is for filters
    ({"task_type": "t", "scheduled_at": "1700000000"}, False),  # a number is a number
    ({"task_type": "t", "expires_at": False}, False),
    ({**A_TASK, "payload": "a", "payload_base64": "YQ=="}, False),
    ({**A_TASK, "payload": None, "payload_base64": "YQ=="}, True),
    ({**A_TASK, "payload_base64": "YQ"}, False),  # unpadded
    ({**A_TASK, "priority": 5.0}, True),  # JSON Schema's integer
    ({**A_TASK, "priority": "5"}, False),
    ({**A_TASK, "priority": True}, False),
    ({**A_TASK, "since": 5}, False),
]
BULKS: list[tuple[dict[str, Any], bool]] = [
    ({"ids": [], "filter": {"state": "failed"}}, False),  # ids or filter: one of them
    ({"ids": [], "filter": None}, True),
    ({}, False),
    ({"filter": {}}, False),  # a filter of every task
    ({"filter": {"priority_min": 0, "state": None}}, False),  # still every task
    ({"filter": {"priority_min": 1}}, True),
    ({"filter": {"priority_max": 254}}, True),
    ({"filter": {"queue": "nothing-here", "created_after": "10m"}}, True),
    ({"filter": {"created_before": "1969-01-01T00:00:00Z"}}, True),
    ({"filter": {"created_after": "2024-07-01"}}, False),
]


@pytest.mark.parametrize(("body", "valid"), SUBMITS, ids=lambda v: str(v)[:60])
def test_a_submit_is_accepted_exactly_when_the_schema_says_it_is_valid(
    http: httpx.Client, body: dict[str, Any], valid: bool
) -> None:
    schema = body_schema(http.get("/openapi.json").json(), "/v1/tasks")
    assert schema.is_valid(body) is valid
    r = http.post("/v1/tasks", json=body)
    assert (r.status_code == 201) is valid, r.text
    if not valid:
        assert r.status_code == 422
        assert r.json()["error"]["name"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("body", "valid"), BULKS, ids=lambda v: str(v)[:60])
def test_a_bulk_action_is_accepted_exactly_when_the_schema_says_it_is_valid(
    http: httpx.Client, body: dict[str, Any], valid: bool
) -> None:
    schema = body_schema(http.get("/openapi.json").json(), "/v1/tasks/bulk/{action}")
    assert schema.is_valid(body) is valid
    r = http.post("/v1/tasks/bulk/cancel", json=body)
    assert (r.status_code == 200) is valid, r.text


def test_a_task_before_1970_is_as_past_as_the_epoch(http: httpx.Client) -> None:
    r = http.post("/v1/tasks", json={"task_type": "t", "queue": f"q-{uuid.uuid4()}",
                                     "expires_at": "1960-01-01T00:00:00Z"})  # fmt: skip
    task = http.get(f"/v1/tasks/{r.json()['id']}").json()
    assert (task["expires_at"], task["expires_at_rfc3339"]) == (0.0, "1970-01-01T00:00:00.000Z")


@pytest.mark.parametrize(
    ("path", "query", "says"),
    [
        ("/v1/tasks", "since=yesterday", "query.since: unknown parameter (got 'yesterday') "
         "(did you mean created_after?); GET /v1/tasks takes created_after, created_before"),
        ("/v1/tasks", "type=echo", "(did you mean task_type?)"),
        ("/v1/tasks", "stat=failed", "(did you mean state?)"),
        ("/v1/tasks", "state=failed&state=pending", "query.state: given more than once"),
        ("/v1/stats", "verbose=1", "GET /v1/stats takes no query parameters"),
        (f"/v1/tasks/{uuid.UUID(int=1)}", "payload=true", "did you mean include_payload?"),
        ("/healthz", "x=1", "query.x: unknown parameter"),
    ],
)  # fmt: skip
def test_an_unknown_query_parameter_is_refused_naming_it(
    http: httpx.Client, path: str, query: str, says: str
) -> None:
    r = http.get(f"{path}?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["name"] == "INVALID_ARGUMENT"
    assert says in r.json()["error"]["message"]


def test_known_query_parameters_still_work(http: httpx.Client) -> None:
    assert http.get("/v1/tasks", params={"state": "pending", "limit": 1}).status_code == 200
    task_id = http.post("/v1/tasks", json=A_TASK).json()["id"]
    assert http.get(f"/v1/tasks/{task_id}", params={"include_payload": "true"}).status_code == 200


def test_every_time_is_shown_as_unix_seconds_and_as_rfc_3339(http: httpx.Client) -> None:
    task_id = http.post("/v1/tasks", json={**A_TASK, "expires_at": 4102444800.5}).json()["id"]
    task = http.get(f"/v1/tasks/{task_id}").json()
    times = [k for k, v in task.items() if k.endswith("_at") and v is not None]
    assert {"created_at", "updated_at", "scheduled_at", "expires_at"} <= set(times)
    for name in times:
        assert task[f"{name}_rfc3339"] == format_rfc3339(task[name])
    assert task["expires_at_rfc3339"] == "2100-01-01T00:00:00.500Z"
    assert task["started_at"] is task["started_at_rfc3339"] is None
    listed = http.get("/v1/tasks", params={"created_after": task["created_at_rfc3339"]}).json()
    assert task_id in [t["id"] for t in listed["tasks"]]  # what is shown is taken back


def test_a_cursor_may_drop_its_padding(http: httpx.Client) -> None:
    for _ in range(3):
        http.post("/v1/tasks", json=A_TASK)
    page = http.get("/v1/tasks", params={"limit": 1}).json()
    cursor = page["next_cursor"]
    assert cursor.endswith("=")
    padded = http.get("/v1/tasks", params={"limit": 1, "cursor": cursor}).json()
    bare = http.get("/v1/tasks", params={"limit": 1, "cursor": cursor.rstrip("=")}).json()
    assert padded == bare
    assert padded["tasks"][0]["id"] != page["tasks"][0]["id"]


def test_get_ws_without_the_upgrade_is_426_in_the_error_shape(http: httpx.Client) -> None:
    r = http.get("/ws")
    assert r.status_code == 426
    assert r.headers["upgrade"] == "websocket"
    err = r.json()["error"]
    assert (err["code"], err["name"]) == (1007, "UPGRADE_REQUIRED")
    assert "WebSocket" in err["message"]
    refused = http.post("/ws")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET")


def test_every_write_declares_the_503_a_follower_answers_naming_the_leader(
    http: httpx.Client,
) -> None:
    doc = http.get("/openapi.json").json()
    writes = [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
        if method in ("post", "put", "patch", "delete")
    ]
    assert len(writes) >= 6
    answers = [
        tq_error_response(NotLeaderError("not applied", leader="10.0.0.2:7420")),
        tq_error_response(NotLeaderError("not applied")),  # none known: "leader": null
    ]
    for answer in answers:
        assert answer.status_code == 503
        body = json.loads(bytes(answer.body))
        assert set(body["error"]) == {"code", "name", "message", "leader"}
        for path, method, op in writes:
            declared = op["responses"]["503"]["content"]["application/json"]["schema"]
            validator = jsonschema_rs.validator_for({**declared, "components": doc["components"]})
            assert validator.is_valid(body), (method, path, body)
            # ... and a 503 that is not about the leader leaves it out, valid all the same.
            assert validator.is_valid({"error": {"code": 6001, "name": "SHUTTING_DOWN",
                                                 "message": "bye"}})  # fmt: skip
