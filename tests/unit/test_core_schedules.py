"""The machine's rules for schedules beyond what the property test draws: a replace that
changes the definition keeps a pause (its own or the one it asks for), and what a schedule
record must hold (the core's own checks, which need no calendar)."""

from __future__ import annotations

import pytest

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.machine import Machine
from tq.core.schedules import CRON, Missed, Schedule, TaskTemplate, validate_schedule
from tq.errors import ValidationError


def every(interval: float, *, paused: bool = False, name: str = "s") -> Schedule:
    return Schedule(
        name, None, interval, "UTC", TaskTemplate("t", "q"), Missed.SKIP, paused,
        None if paused else 10.0 + interval, None, 0, 10.0, 10.0,
    )  # fmt: skip


def test_a_replace_keeps_a_pause_and_a_replace_asking_for_one_pauses() -> None:
    m = Machine()
    m.apply(c.CreateSchedule(10.0, every(5.0)), Effects())
    m.apply(c.CreateSchedule(11.0, every(7.0, paused=True), replace=True), Effects())
    s = m.schedule("s")
    assert s is not None and (s.paused, s.next_at, s.interval) == (True, None, 7.0)
    m.apply(c.CreateSchedule(12.0, every(9.0), replace=True), Effects())
    s = m.schedule("s")
    assert s is not None and (s.paused, s.next_at, s.interval) == (True, None, 9.0)
    assert (s.created_at, s.updated_at) == (10.0, 12.0)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (every(5.0, name="no spaces"), "name: 'no spaces' is not a schedule name"),
        (every(0.5), "interval: 0.5 s is outside 1..1e10 s"),
        (Schedule("s", "* * *", None, "UTC", TaskTemplate("t", "q"), Missed.SKIP, False, 1.0,
                  None, 0, 0.0, 0.0), "cron: '* * *' is not a cron expression"),
        (Schedule("s", "* * * * *", 5.0, "UTC", TaskTemplate("t", "q"), Missed.SKIP, False,
                  1.0, None, 0, 0.0, 0.0), "cron, interval: give exactly one"),
        (Schedule("s", None, 5.0, "UTC", TaskTemplate("t", "q", priority=300), Missed.SKIP,
                  False, 1.0, None, 0, 0.0, 0.0), "priority must be within 0..255"),
        (Schedule("s", None, 5.0, "UTC", TaskTemplate("t", "q", tags={"tq.schedule": "x"}),
                  Missed.SKIP, False, 1.0, None, 0, 0.0, 0.0), "tags: 'tq.schedule' is set"),
        (Schedule("s", None, 5.0, "UTC", TaskTemplate("t", "q"), Missed.SKIP, True, 1.0, None,
                  0, 0.0, 0.0), "next_at: a paused schedule has none"),
    ],
)  # fmt: skip
def test_a_bad_schedule_record_is_refused_naming_the_field(bad: Schedule, needle: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_schedule(bad)
    assert needle in refused.value.message
    m = Machine()
    with pytest.raises(ValidationError):
        m.apply(c.CreateSchedule(1.0, bad), Effects())
    assert m.schedules() == []


@pytest.mark.parametrize(
    "expr", ["*/5 * * * *", "0 3 * * 1-5", "0 0 1,15 jan-jun MON", "@hourly", "0 0 * * * 30"]
)
def test_the_cron_grammar_takes_the_usual_forms(expr: str) -> None:
    assert CRON.fullmatch(expr)


@pytest.mark.parametrize("expr", ["60 * * * *", "* 24 * * *", "0 0 0 * *", "*/0 * * * *", ""])
def test_the_cron_grammar_refuses_values_out_of_bounds(expr: str) -> None:
    assert CRON.fullmatch(expr) is None
