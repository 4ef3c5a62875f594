"""``tq schedules create|list|show|pause|resume|delete`` as real processes against a real
broker: next run times as RFC 3339 in the table, JSON and YAML; errors naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.cli_procs import run_tq, wait_for
from tq.core.times import parse_rfc3339
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
TABLE_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\b")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with BrokerProcess(tmp_path_factory.mktemp("cli-sched") / "data") as broker:
        yield broker.url


def ok(*args: str, url: str) -> str:
    done = run_tq(*args, url=url)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def as_json(*args: str, url: str) -> Any:
    return json.loads(ok("-o", "json", *args, url=url))


def test_create_list_show_pause_resume_delete(url: str) -> None:
    out = ok("schedules", "create", "report", "reports.daily", '{"kind": "daily"}',
             "--cron", "0 6 * * 1-5", "--tz", "Europe/Paris", "--queue", "reports",
             "--tag", "team=bi", "--missed", "once", url=url)  # fmt: skip
    assert out.startswith("schedule report: next run ") and TABLE_TIME.search(out)
    table = ok("schedules", "list", url=url)
    assert "report" in table and "0 6 * * 1-5 (Europe/Paris)" in table
    assert TABLE_TIME.search(table)
    (listed,) = [s for s in as_json("schedules", "list", url=url) if s["name"] == "report"]
    next_at = parse_rfc3339(listed["next_at"])
    assert next_at is not None and listed["next_at"].endswith("Z")
    assert (listed["queue"], listed["missed"], listed["tags"]) == (
        "reports",
        "once",
        {"team": "bi"},
    )
    assert listed["payload"] == '{"kind": "daily"}'
    shown = yaml.safe_load(ok("-o", "yaml", "schedules", "show", "report", url=url))
    assert shown["next_at"] == listed["next_at"] and shown["timezone"] == "Europe/Paris"
    assert "next_at" in ok("schedules", "show", "report", url=url)
    assert ok("schedules", "pause", "report", url=url).strip() == "paused report"
    assert as_json("schedules", "show", "report", url=url)["next_at"] is None
    assert "paused" in ok("schedules", "list", url=url)
    assert ok("schedules", "resume", "report", url=url).startswith("resumed report: next run ")
    assert ok("schedules", "delete", "report", url=url).strip() == "deleted report"
    gone = run_tq("schedules", "show", "report", url=url)
    assert gone.returncode != 0 and "no schedule named 'report'" in gone.stderr


def test_an_interval_schedule_fires_and_list_counts_it(url: str) -> None:
    ok("schedules", "create", "tick", "cli.tick", "--interval", "1", url=url)

    def fired() -> int | None:
        (s,) = [s for s in as_json("schedules", "list", url=url) if s["name"] == "tick"]
        return s["fired"] if s["fired"] >= 1 else None

    wait_for("a firing", fired)
    tasks = as_json("list", "--type", "cli.tick", url=url)["tasks"]
    assert tasks and tasks[0]["tags"]["tq.schedule"] == "tick"
    ok("schedules", "delete", "tick", url=url)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cron", "61 * * * *"], "cron: '61 * * * *' is not a valid cron expression"),
        (["--cron", "* * * * *", "--tz", "Nowhere/Town"], "timezone: unknown time zone"),
        (["--cron", "* * * * *", "--interval", "5"], "cron, interval: give exactly one"),
        ([], "cron, interval: give exactly one"),
    ],
)
def test_a_bad_schedule_fails_naming_the_field(url: str, args: list[str], needle: str) -> None:
    done = run_tq("schedules", "create", "bad", "cli.bad", *args, url=url)
    assert done.returncode != 0
    assert needle in done.stderr and "Traceback" not in done.stderr


def test_a_taken_name_fails_unless_replaced(url: str) -> None:
    ok("schedules", "create", "twice", "cli.t", "--interval", "60", url=url)
    done = run_tq("schedules", "create", "twice", "cli.t", "--interval", "60", url=url)
    assert done.returncode != 0 and "already exists" in done.stderr
    ok("schedules", "create", "twice", "cli.t", "--interval", "90", "--replace", url=url)
    assert as_json("schedules", "show", "twice", url=url)["interval"] == 90.0
    ok("schedules", "delete", "twice", url=url)
