"""How the schedule job plans a due firing under each missed policy (tq.broker.schedules.plan):
on time, one firing; after downtime, none (skip), the latest (once), or each up to the cap
(all); the next firing time always after now, in phase with the schedule."""

from __future__ import annotations

import itertools

import pytest

from tq.broker.schedules import plan
from tq.config import load
from tq.core.ids import TaskId, make_task_id
from tq.core.schedules import Missed, Schedule, TaskTemplate

B = load(
    env={}, overrides={"broker.schedule_misfire_grace_s": 2.0, "broker.schedule_catch_up_max": 3}
).broker
_seq = itertools.count()


def new_id(now: float) -> TaskId:
    return make_task_id(int(now * 1000), next(_seq))


def every_ten(missed: Missed, next_at: float = 100.0) -> Schedule:
    return Schedule(
        "s", None, 10.0, "UTC", TaskTemplate("t", "q"), missed, False, next_at, None, 0, 0.0, 0.0
    )


@pytest.mark.parametrize("missed", list(Missed))
def test_a_firing_on_time_fires_its_one_time_whatever_the_policy(missed: Missed) -> None:
    f = plan(every_ten(missed), 100.3, B, new_id)
    assert (f.due, f.times, f.next_at, len(f.task_ids)) == (100.0, (100.0,), 110.0, 1)


def test_skip_fires_nothing_missed_beyond_the_grace() -> None:
    f = plan(every_ten(Missed.SKIP), 155.0, B, new_id)
    assert (f.times, f.task_ids, f.next_at) == ((), (), 160.0)


def test_skip_still_fires_the_latest_time_within_the_grace() -> None:
    f = plan(every_ten(Missed.SKIP), 151.5, B, new_id)
    assert (f.times, f.next_at) == ((150.0,), 160.0)


def test_once_fires_the_latest_missed_time_only() -> None:
    f = plan(every_ten(Missed.ONCE), 155.0, B, new_id)
    assert (f.times, f.next_at) == ((150.0,), 160.0)


def test_all_fires_each_missed_time_up_to_the_cap_the_latest_ones() -> None:
    f = plan(every_ten(Missed.ALL), 125.0, B, new_id)
    assert (f.times, f.next_at) == ((100.0, 110.0, 120.0), 130.0)
    capped = plan(every_ten(Missed.ALL), 185.0, B, new_id)
    assert (capped.times, capped.next_at) == ((160.0, 170.0, 180.0), 190.0)
    assert len(set(capped.task_ids)) == 3


def test_a_cron_schedule_plans_in_its_zone() -> None:
    s = Schedule(
        "c", "0 * * * *", None, "Asia/Kolkata", TaskTemplate("t", "q"), Missed.ALL, False,
        1_767_227_400.0, None, 0, 0.0, 0.0,
    )  # fmt: skip  # 2026-01-01T00:30:00Z = 06:00 IST: Kolkata's hours start at :30 UTC
    f = plan(s, 1_767_227_400.0 + 3 * 3600 + 5, B, new_id)
    assert f.times == tuple(1_767_227_400.0 + h * 3600 for h in (1, 2, 3))
    assert f.next_at == 1_767_227_400.0 + 4 * 3600
