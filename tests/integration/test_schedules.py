"""Cron and interval schedules through the public Python API against a real broker process:
create, list, show, pause, resume, delete, the errors that name the bad field, and the tasks
each firing submits (tagged with their schedule and scheduled time)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cli_procs import wait_for
from tq.client import Client
from tq.client.schedules import schedule_spec
from tq.core.ids import format_task_id
from tq.core.schedules import TAG_FIRE_TIME, TAG_SCHEDULE
from tq.errors import ConflictError, ErrorCode, NotFoundError, TqError, ValidationError
from tq.protocol import TaskInfo
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with (
        BrokerProcess(tmp_path_factory.mktemp("sched") / "data") as broker,
        Client(broker.url) as c,
    ):
        yield c


def tasks_of(client: Client, name: str, task_type: str) -> list[TaskInfo]:
    found, _ = client.list_tasks(task_type=task_type, limit=1000)
    return sorted(
        (t for t in found if t.tags.get(TAG_SCHEDULE) == name), key=lambda t: t.scheduled_at or 0
    )


def test_an_interval_schedule_submits_one_task_per_firing(client: Client) -> None:
    made = client.create_schedule(
        schedule_spec("every-second", "sched.tick", b"{}", interval=1, queue="sched-a",
                      priority=200, tags={"team": "ops"}, missed="all")
    )  # fmt: skip
    assert made.next_at is not None and made.interval == 1.0 and not made.paused
    tasks = wait_for(
        "three firings",
        lambda: t if len(t := tasks_of(client, "every-second", "sched.tick")) >= 3 else None,
    )
    times = [t.scheduled_at or 0.0 for t in tasks]
    assert times[0] == made.next_at
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.0] * (len(times) - 1)
    first = client.status(format_task_id(tasks[0].id), include_payload=True)
    assert (first.queue, first.priority, first.payload) == ("sched-a", 200, b"{}")
    assert first.tags["team"] == "ops" and first.tags[TAG_FIRE_TIME].endswith("Z")
    shown = client.get_schedule("every-second")
    assert shown.fired >= 3 and shown.last_fired_at is not None
    assert shown.next_at is not None and shown.next_at > shown.last_fired_at
    client.delete_schedule("every-second")


def test_a_name_is_taken_until_replaced_and_an_unchanged_replace_keeps_the_next_time(
    client: Client,
) -> None:
    spec = schedule_spec("nightly", "sched.nightly", cron="0 3 * * *", timezone="Europe/Berlin")
    made = client.create_schedule(spec)
    with pytest.raises(ConflictError) as taken:
        client.create_schedule(spec)
    assert taken.value.code is ErrorCode.SCHEDULE_ALREADY_EXISTS
    again = client.create_schedule(spec, replace=True)
    assert again.next_at == made.next_at and again.updated_at == made.updated_at
    changed = client.create_schedule(
        schedule_spec("nightly", "sched.nightly", cron="30 4 * * *", timezone="Europe/Berlin"),
        replace=True,
    )
    assert changed.cron == "30 4 * * *" and changed.created_at == made.created_at
    assert changed.next_at != made.next_at
    assert [s.name for s in client.list_schedules()].count("nightly") == 1
    client.delete_schedule("nightly")


def test_pause_stops_firing_resume_fires_from_now_and_delete_forgets(client: Client) -> None:
    client.create_schedule(schedule_spec("held", "sched.held", interval=1))
    paused = client.pause_schedule("held")
    assert paused.paused and paused.next_at is None
    # Another schedule firing twice shows time passed with the job running.
    client.create_schedule(schedule_spec("witness", "sched.witness", interval=1))
    wait_for("two witness firings", lambda: client.get_schedule("witness").fired >= 2 or None)
    assert client.get_schedule("held").fired == 0
    assert tasks_of(client, "held", "sched.held") == []
    resumed = client.resume_schedule("held")
    assert not resumed.paused and resumed.next_at is not None
    assert resumed.next_at > paused.updated_at
    wait_for("a firing after resume", lambda: client.get_schedule("held").fired >= 1 or None)
    gone = client.delete_schedule("held")
    assert gone.name == "held"
    with pytest.raises(NotFoundError) as missing:
        client.get_schedule("held")
    assert missing.value.code is ErrorCode.SCHEDULE_NOT_FOUND
    for call in (client.pause_schedule, client.resume_schedule, client.delete_schedule):
        with pytest.raises(NotFoundError):
            call("held")
    client.delete_schedule("witness")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a valid cron expression"),
        ({"cron": "* * *"}, "cron: '* * *' has 3 fields"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
        ({"cron": "* * * * *", "interval": 5}, "cron, interval: give exactly one"),
        ({}, "cron, interval: give exactly one"),
        ({"interval": 0.5}, "interval"),
        ({"interval": 5, "timezone": "Europe/Berlin"}, "timezone: applies to cron schedules"),
        ({"interval": 5, "tags": {"tq.schedule": "x"}}, "tags: 'tq.schedule' is set by"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(
    client: Client, fields: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError) as bad:
        client.create_schedule(schedule_spec("bad", "sched.bad", **fields))  # type: ignore[arg-type]
    assert needle in bad.value.message
    assert "bad" not in [s.name for s in client.list_schedules()]


def test_a_bad_name_is_refused(client: Client) -> None:
    with pytest.raises(TqError) as bad:
        client.create_schedule(schedule_spec("has space", "sched.bad", interval=5))
    assert "name" in bad.value.message


def test_metrics_count_schedules_by_state_and_their_firings(tmp_path: Path) -> None:
    settings = {"monitoring.prometheus_enabled": True}
    with BrokerProcess(tmp_path / "data", settings=settings) as broker, Client(broker.url) as c:
        url = f"http://127.0.0.1:{broker.ports['metrics_port']}/metrics"
        c.create_schedule(schedule_spec("m-beat", "sched.m", interval=1))
        c.create_schedule(schedule_spec("m-held", "sched.m", interval=60, paused=True))
        wait_for("a firing", lambda: c.get_schedule("m-beat").fired >= 1 or None)
        text = httpx.get(url, timeout=10).text
        assert 'tq_schedules{state="active"} 1.0' in text
        assert 'tq_schedules{state="paused"} 1.0' in text
        (firings,) = [
            line for line in text.splitlines() if line.startswith("tq_schedule_firings_total")
        ]
        assert float(firings.split()[-1]) >= 1
