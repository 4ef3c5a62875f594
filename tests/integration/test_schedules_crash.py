"""A schedule fires exactly once per firing across a broker SIGKILL and restart.

An interval schedule of 1 s fires, the broker is killed -9 and stays down ~3 s, then starts
again on the same data dir. With policy ``all``, the tasks made (durably) have unique
scheduled times with no gap, the missed ones caught up after the restart; with ``skip``, none
is made for a time already past the grace when it fired, so the restart brings no burst.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from tests.integration.cli_procs import wait_for
from tq.client import Client
from tq.client.schedules import schedule_spec
from tq.core.schedules import TAG_SCHEDULE
from tq.protocol import TaskInfo
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)
DOWN_S = 3.0
GRACE_S = 0.5


def scheduled(client: Client, name: str) -> list[TaskInfo]:
    found, _ = client.list_tasks(task_type="crash.tick", limit=1000)
    tasks = [t for t in found if t.tags.get(TAG_SCHEDULE) == name]
    return sorted(tasks, key=lambda t: t.scheduled_at or 0.0)


def fired_after(client: Client, name: str, when: float) -> None:
    """Wait until the schedule fired for a time after ``when``."""

    def probe() -> bool | None:
        last = client.get_schedule(name).last_fired_at
        return True if last is not None and last > when else None

    wait_for(f"{name} firing after {when}", probe, timeout=30)


def kill_and_restart(broker: BrokerProcess) -> float:
    """SIGKILL, stay down ``DOWN_S`` (firing times pass meanwhile), start again; the time the
    broker was back."""
    broker.kill()
    back_at = time.time() + DOWN_S
    while time.time() < back_at:  # the outage itself: firing times must pass while it lasts
        time.sleep(0.1)
    broker.start()
    return time.time()


def test_policy_all_catches_up_every_missed_firing_once_with_no_gap(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker, Client(broker.url) as c:
        made = c.create_schedule(schedule_spec("all", "crash.tick", interval=1, missed="all"))
        wait_for("two firings", lambda: c.get_schedule("all").fired >= 2 or None)
        restarted = kill_and_restart(broker)
        fired_after(c, "all", restarted + 1)
        c.pause_schedule("all")  # nothing fires between the two reads below
        tasks = scheduled(c, "all")
        times = [t.scheduled_at or 0.0 for t in tasks]
        assert times[0] == made.next_at
        assert len(set(times)) == len(times) == c.get_schedule("all").fired
        assert len({t.id for t in tasks}) == len(tasks)
        steps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
        assert steps == [1.0] * len(steps), "a firing was lost or doubled"
        late = [t for t in tasks if t.created_at - (t.scheduled_at or 0.0) > 1.0]
        assert len(late) >= DOWN_S - 1, "the missed firings were not caught up after the restart"


def test_policy_skip_fires_nothing_late_after_a_restart(tmp_path: Path) -> None:
    settings = {"broker.schedule_misfire_grace_s": GRACE_S}
    with BrokerProcess(tmp_path / "data", settings=settings) as broker, Client(broker.url) as c:
        c.create_schedule(schedule_spec("skip", "crash.tick", interval=1, missed="skip"))
        wait_for("two firings", lambda: c.get_schedule("skip").fired >= 2 or None)
        restarted = kill_and_restart(broker)
        fired_after(c, "skip", restarted + 1)
        c.pause_schedule("skip")
        tasks = scheduled(c, "skip")
        times = [t.scheduled_at or 0.0 for t in tasks]
        assert len(set(times)) == len(times) == c.get_schedule("skip").fired
        # Each task was made within the grace of its time: the restart made none of the
        # times missed while the broker was down (no burst).
        late = [t.created_at - (t.scheduled_at or 0.0) for t in tasks]
        assert max(late) <= GRACE_S + 1e-6, late
        steps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
        assert all(s == int(s) and s >= 1 for s in steps), steps
        assert max(steps) >= DOWN_S - 1, "the firings of the outage were not skipped"
