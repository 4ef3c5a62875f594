"""GET /v1/tasks filters and cursor paging, and bulk operations by ids and by filter, over
real sockets against a real broker process. Each test works in its own queue."""

from __future__ import annotations

import time
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
FAR = 3600


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("listing") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def http(broker: BrokerProcess) -> Iterator[httpx.Client]:
    url = f"http://127.0.0.1:{broker.ports['rest_port']}"
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def submit_batch(http: httpx.Client, tasks: list[dict[str, Any]]) -> list[str]:
    r = http.post("/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    return [t["id"] for t in r.json()["tasks"]]


def listing(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following next_cursor."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = http.get("/v1/tasks", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        tasks += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks
    raise AssertionError("listing did not end within 100 pages")


def ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for t in tasks]


def test_paging_walks_every_task_once_in_creation_order(http: httpx.Client, queue: str) -> None:
    made = submit_batch(http, [{"task_type": "t", "queue": queue}] * 7)
    first = http.get("/v1/tasks", params={"queue": queue, "limit": 3}).json()
    assert len(first["tasks"]) == 3
    assert first["next_cursor"]
    assert ids(listing(http, queue=queue, limit=3)) == made


def test_filters_by_state_queue_and_task_type(http: httpx.Client, queue: str) -> None:
    a, b, c = submit_batch(
        http,
        [
            {"task_type": "alpha", "queue": queue},
            {"task_type": "beta", "queue": queue},
            {"task_type": "alpha", "queue": queue, "delay": FAR},
        ],
    )
    assert ids(listing(http, queue=queue, task_type="alpha")) == [a, c]
    assert ids(listing(http, queue=queue, state="scheduled")) == [c]
    http.post(f"/v1/tasks/{b}/cancel")
    assert ids(listing(http, queue=queue, state="cancelled")) == [b]
    assert ids(listing(http, queue=queue, state="pending")) == [a]


def test_priority_tier_and_range_intersect(http: httpx.Client, queue: str) -> None:
    low, normal, high, top = submit_batch(
        http, [{"task_type": "t", "queue": queue, "priority": p} for p in (5, 150, 210, 255)]
    )
    assert ids(listing(http, queue=queue, priority="high")) == [high, top]
    assert ids(listing(http, queue=queue, priority="normal")) == [normal]
    assert ids(listing(http, queue=queue, priority="low")) == [low]
    assert ids(listing(http, queue=queue, priority="high", priority_max=220)) == [high]
    assert ids(listing(http, queue=queue, priority_min=100, priority_max=250)) == [normal, high]
    assert listing(http, queue=queue, priority="low", priority_min=100) == []


def test_created_after_and_before_take_unix_seconds_rfc_3339_or_an_age(
    http: httpx.Client, queue: str
) -> None:
    (early,) = submit_batch(http, [{"task_type": "t", "queue": queue}])
    created = http.get(f"/v1/tasks/{early}").json()["created_at"]
    (late,) = submit_batch(http, [{"task_type": "t", "queue": queue}])
    late_at = http.get(f"/v1/tasks/{late}").json()["created_at"]
    assert late_at > created
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created) - 1)) + "Z"
    east = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created) - 1 + 7200)) + "+02:00"
    assert ids(listing(http, queue=queue, created_after=utc)) == [early, late]
    assert ids(listing(http, queue=queue, created_after=east)) == [early, late]
    assert ids(listing(http, queue=queue, created_after=late_at)) == [late]
    assert ids(listing(http, queue=queue, created_before=late_at)) == [early]
    assert listing(http, queue=queue, created_after="2999-01-01T00:00:00+00:00") == []
    # Ages, as `tq list --since 10m` takes them: created in the last ten minutes.
    assert ids(listing(http, queue=queue, created_after="10m")) == [early, late]
    assert listing(http, queue=queue, created_before="10m") == []
    bulk = {"filter": {"queue": queue, "created_after": "1h"}}
    assert http.post("/v1/tasks/bulk/cancel", json=bulk).json()["succeeded"] == 2


def test_a_bad_cursor_or_filter_is_a_422_naming_it(http: httpx.Client) -> None:
    for params, field in (
        ({"cursor": "!!not-a-cursor!!"}, "cursor"),
        ({"state": "sleeping"}, "state"),
        ({"priority": "urgent"}, "priority"),
        ({"limit": 0}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2024-07-01T12:00:00"}, "no UTC offset"),
        ({"created_before": "-5"}, "created_before"),
        ({"since": "yesterday"}, "query.since: unknown parameter"),
    ):
        r = http.get("/v1/tasks", params=params)
        assert r.status_code == 422, params
        err = r.json()["error"]
        assert err["name"] == "INVALID_ARGUMENT"
        assert field in err["message"]


def test_bulk_by_ids_reports_each_id(http: httpx.Client, queue: str) -> None:
    a, b = submit_batch(http, [{"task_type": "t", "queue": queue, "delay": FAR}] * 2)
    unknown = str(uuid.uuid4())
    r = http.post("/v1/tasks/bulk/cancel", json={"ids": [a, unknown, b, a]})
    assert r.status_code == 200
    body = r.json()
    assert [(x["id"], x["ok"]) for x in body["results"]] == [(a, True), (unknown, False), (b, True)]
    assert body["results"][1]["error"]["name"] == "TASK_NOT_FOUND"
    assert (body["succeeded"], body["failed"], body["truncated"]) == (2, 1, False)
    deleted = http.post("/v1/tasks/bulk/delete", json={"ids": [a, b]}).json()
    assert deleted["succeeded"] == 2
    assert http.get(f"/v1/tasks/{a}").status_code == 404


def test_bulk_by_filter_is_bounded_by_limit(http: httpx.Client, queue: str) -> None:
    made = submit_batch(http, [{"task_type": "t", "queue": queue, "delay": FAR}] * 5)
    spec = {"filter": {"queue": queue, "state": "scheduled"}, "limit": 3}
    first = http.post("/v1/tasks/bulk/cancel", json=spec).json()
    assert [x["id"] for x in first["results"]] == made[:3]
    assert first["truncated"] is True
    rest = http.post("/v1/tasks/bulk/cancel", json=spec).json()
    assert [x["id"] for x in rest["results"]] == made[3:]
    assert rest["truncated"] is False
    assert ids(listing(http, queue=queue, state="cancelled")) == made


def test_bulk_retry_and_delete_by_filter(http: httpx.Client, queue: str) -> None:
    deps = submit_batch(http, [{"task_type": "t", "queue": queue, "delay": FAR}] * 2)
    dead = submit_batch(http, [{"task_type": "t", "queue": queue, "depends_on": [d]} for d in deps])
    http.post("/v1/tasks/bulk/cancel", json={"ids": deps})
    in_dead_letter = {"queue": queue, "state": "dead_letter"}
    assert ids(listing(http, **in_dead_letter)) == dead
    retried = http.post("/v1/tasks/bulk/retry", json={"filter": in_dead_letter}).json()
    assert retried["succeeded"] == 2
    assert ids(listing(http, queue=queue, state="pending")) == dead
    cancelled = {"filter": {"queue": queue, "state": "cancelled"}}
    assert http.post("/v1/tasks/bulk/delete", json=cancelled).json()["succeeded"] == 2
    assert ids(listing(http, queue=queue)) == dead


def test_bulk_by_filter_goes_on_from_its_cursor_and_ends_though_nothing_changes(
    http: httpx.Client, queue: str
) -> None:
    made = submit_batch(http, [{"task_type": "t", "queue": queue, "delay": FAR}] * 5)
    seen: list[tuple[str, int]] = []
    body: dict[str, Any] = {"filter": {"queue": queue}, "limit": 2}
    for _ in range(10):  # three calls are expected
        r = http.post("/v1/tasks/bulk/retry", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        seen += [(x["id"], x["error"]["code"]) for x in out["results"]]
        assert out["truncated"] is (out["next_cursor"] is not None)
        if out["next_cursor"] is None:
            break
        body["cursor"] = out["next_cursor"]
    assert seen == [(i, 3002) for i in made]  # each once: none was in dead letter


def test_a_bulk_cursor_goes_with_a_filter_only(http: httpx.Client, queue: str) -> None:
    r = http.post("/v1/tasks/bulk/delete", json={"ids": [], "cursor": "AAAA"})
    assert r.status_code == 422
    assert "cursor goes with filter" in r.json()["error"]["message"]
    r = http.post("/v1/tasks/bulk/delete", json={"filter": {"queue": queue}, "cursor": "x" * 90})
    assert r.status_code == 422
    assert "cursor" in r.json()["error"]["message"]


def test_bulk_needs_exactly_one_of_ids_and_filter(http: httpx.Client) -> None:
    bodies: list[dict[str, Any]] = [{}, {"ids": [], "filter": {}}]
    for body in bodies:
        r = http.post("/v1/tasks/bulk/delete", json=body)
        assert r.status_code == 422
        assert "ids or filter" in r.json()["error"]["message"]
    r = http.post("/v1/tasks/bulk/explode", json={"ids": []})
    assert r.status_code == 422
    assert "action" in r.json()["error"]["message"]
