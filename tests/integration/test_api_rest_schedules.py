"""/v1/schedules over real sockets against a real broker process: create, list, show, pause,
resume, delete; the errors (422 naming the field, 404, 409) and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.cli_procs import wait_for
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with BrokerProcess(tmp_path_factory.mktemp("rest-sched") / "data", settings=SETTINGS) as b:
        url = f"http://127.0.0.1:{b.ports['rest_port']}"
        with httpx.Client(base_url=url, timeout=10) as client:
            yield client


def error_of(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_a_schedule_is_created_listed_paused_resumed_and_deleted(http: httpx.Client) -> None:
    body = {"name": "digest", "cron": "0 7 * * *", "timezone": "America/New_York",
            "task_type": "mail.digest", "queue": "mail", "payload": '{"to": "all"}',
            "tags": {"kind": "digest"}, "missed": "once"}  # fmt: skip
    r = http.post("/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["next_at_rfc3339"].endswith("Z") and made["next_at"] > made["created_at"]
    assert (made["payload"], made["missed"], made["fired"]) == ('{"to": "all"}', "once", 0)
    listed = http.get("/v1/schedules").json()["schedules"]
    assert [s for s in listed if s["name"] == "digest"] == [made]
    assert http.get("/v1/schedules/digest").json() == made
    again = http.post("/v1/schedules", json=body)
    assert again.status_code == 409
    assert error_of(again)["name"] == "SCHEDULE_ALREADY_EXISTS"
    same = http.post("/v1/schedules", json={**body, "replace": True})
    assert same.status_code == 201 and same.json()["next_at"] == made["next_at"]
    paused = http.post("/v1/schedules/digest/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert paused.json()["next_at"] is None
    resumed = http.post("/v1/schedules/digest/resume").json()
    assert resumed["paused"] is False and resumed["next_at"] is not None
    gone = http.delete("/v1/schedules/digest")
    assert gone.status_code == 200 and gone.json()["name"] == "digest"
    for r in (
        http.get("/v1/schedules/digest"),
        http.delete("/v1/schedules/digest"),
        http.post("/v1/schedules/digest/pause"),
        http.post("/v1/schedules/digest/resume"),
    ):
        assert r.status_code == 404 and error_of(r)["name"] == "SCHEDULE_NOT_FOUND"


def test_an_interval_schedule_fires_tasks_listed_by_type(http: httpx.Client) -> None:
    r = http.post("/v1/schedules", json={"name": "beat", "interval": 1, "task_type": "rest.beat"})
    assert r.status_code == 201, r.text

    def fired() -> list[dict[str, Any]] | None:
        tasks: list[dict[str, Any]] = http.get(
            "/v1/tasks", params={"task_type": "rest.beat"}
        ).json()["tasks"]
        return tasks or None

    (first, *_) = wait_for("a firing", fired)
    assert first["tags"]["tq.schedule"] == "beat"
    assert first["scheduled_at"] == r.json()["next_at"]
    http.delete("/v1/schedules/beat")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"cron": "0 25 * * *"}, "cron: '0 25 * * *' is not a valid cron expression"),
        ({"cron": "@hourly", "timezone": "Atlantis/Capital"}, "timezone: unknown time zone"),
        ({"cron": "@hourly", "interval": 60}, "cron, interval: give exactly one"),
        ({}, "cron, interval: give exactly one"),
    ],
)
def test_a_bad_schedule_is_a_422_naming_the_field(
    http: httpx.Client, body: dict[str, Any], needle: str
) -> None:
    r = http.post("/v1/schedules", json={"name": "bad", "task_type": "x", **body})
    assert r.status_code == 422
    assert needle in error_of(r)["message"]


def test_a_body_the_schema_refuses_is_a_422(http: httpx.Client) -> None:
    for body in (
        {"name": "bad name", "interval": 5, "task_type": "x"},
        {"name": "ok", "interval": 0.5, "task_type": "x"},
        {"name": "ok", "interval": 5, "task_type": "x", "missed": "sometimes"},
        {"name": "ok", "interval": 5, "task_type": "x", "payload": "a", "payload_base64": "YQ=="},
    ):
        r = http.post("/v1/schedules", json=body)
        assert r.status_code == 422, body
        assert error_of(r)["name"] == "INVALID_ARGUMENT"


def test_the_openapi_document_describes_every_schedule_route(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/schedules"]) == {"get", "post"}
    assert set(paths["/v1/schedules/{name}"]) == {"get", "delete"}
    assert set(paths["/v1/schedules/{name}/pause"]) == {"post"}
    assert set(paths["/v1/schedules/{name}/resume"]) == {"post"}
    assert "404" in paths["/v1/schedules/{name}"]["get"]["responses"]
    assert "409" in paths["/v1/schedules"]["post"]["responses"]
