"""Cron and interval schedules. `tq worker examples.schedules` serves the two periodic tasks
below and declares their schedules when it starts (again at every start: a schedule whose
definition is unchanged keeps its next run time). `python examples/schedules.py` adds one
from a client and prints every schedule with its next run time."""

import os
from datetime import UTC, datetime

import tq
from tq.client import schedule_spec


@tq.periodic(interval=2)  # every 2 seconds; the schedule is named after the task
@tq.task("examples.tick")
def tick() -> str:
    return "tick"


@tq.periodic("0 7 * * 1-5", timezone="Europe/Berlin", name="weekday-report", args=["daily"])
@tq.task("examples.report")
def report(kind: str) -> str:
    return f"{kind} report sent"


if __name__ == "__main__":
    with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
        nightly = schedule_spec(
            "nightly-cleanup",
            "examples.report",
            report.encode_args(["cleanup"], {}),
            cron="30 2 * * *",
            missed="once",  # a broker down at 02:30 runs it once when back
        )
        client.create_schedule(nightly, replace=True)
        for s in client.list_schedules():
            when = "paused" if s.next_at is None else datetime.fromtimestamp(s.next_at, UTC)
            print(f"{s.name}: {s.task_type} next at {when}")
