"""Firing times of cron and interval schedules (tq.broker.cron): next times, missed times after
downtime, and daylight saving time in a zone with transitions."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest

from tq.broker.cron import Timing, check_cron, zone
from tq.errors import ValidationError

BERLIN = "Europe/Berlin"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso(t: float, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(t, zone(tz)).isoformat()


def after(timing: Timing, t: float) -> float:
    got = timing.first_after(t)
    assert got is not None
    return got


def times_after(timing: Timing, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = after(timing, t)
        out.append(iso(t, timing.timezone))
    return out


def test_every_five_minutes_in_utc_fires_on_the_five_minute_marks() -> None:
    timing = Timing("*/5 * * * *", None, "UTC")
    assert times_after(timing, ts("2026-01-01T10:03:10+00:00"), 3) == [
        "2026-01-01T10:05:00+00:00",
        "2026-01-01T10:10:00+00:00",
        "2026-01-01T10:15:00+00:00",
    ]


def test_a_time_exactly_on_a_firing_gives_the_next_one() -> None:
    timing = Timing("0 * * * *", None, "UTC")
    assert timing.first_after(ts("2026-01-01T10:00:00+00:00")) == ts("2026-01-01T11:00:00+00:00")


def test_a_cron_time_is_read_in_the_schedules_zone() -> None:
    timing = Timing("0 9 * * *", None, "America/New_York")
    got = after(timing, ts("2026-07-01T00:00:00+00:00"))
    assert datetime.fromtimestamp(got, UTC).isoformat() == "2026-07-01T13:00:00+00:00"


def test_a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 -> 03:00. A daily 02:30 fires at 03:00 that day, once.
    timing = Timing("30 2 * * *", None, BERLIN)
    assert times_after(timing, ts("2026-03-28T12:00:00+01:00"), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    # Berlin, 2026-10-25: 03:00 -> 02:00, so 02:30 happens twice; a daily job runs once.
    timing = Timing("30 2 * * *", None, BERLIN)
    assert times_after(timing, ts("2026-10-24T12:00:00+02:00"), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_an_hourly_schedule_fires_every_real_hour_across_fall_back() -> None:
    timing = Timing("0 * * * *", None, BERLIN)
    got = times_after(timing, ts("2026-10-25T00:30:00+02:00"), 4)
    assert got == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    utc = [ts(t) for t in got]
    assert [b - a for a, b in itertools.pairwise(utc)] == [3600.0] * 3


def test_missed_cron_times_are_the_latest_few_and_the_next_is_after_now() -> None:
    timing = Timing("*/10 * * * *", None, "UTC")
    first = ts("2026-01-01T10:00:00+00:00")
    now = ts("2026-01-01T11:05:00+00:00")
    times, nxt = timing.due(first, now, 3)
    assert [iso(t) for t in times] == [
        "2026-01-01T10:40:00+00:00",
        "2026-01-01T10:50:00+00:00",
        "2026-01-01T11:00:00+00:00",
    ]
    assert nxt == ts("2026-01-01T11:10:00+00:00")
    every, _ = timing.due(first, now, 100)
    assert len(every) == 7 and every[0] == first


def test_a_cron_time_equal_to_now_is_due() -> None:
    timing = Timing("0 * * * *", None, "UTC")
    now = ts("2026-01-01T10:00:00+00:00")
    times, nxt = timing.due(now, now, 5)
    assert times == [now] and nxt == now + 3600


def test_interval_firings_keep_their_phase_after_downtime() -> None:
    timing = Timing(None, 10.0, "UTC")
    times, nxt = timing.due(100.0, 135.0, 100)
    assert times == [100.0, 110.0, 120.0, 130.0] and nxt == 140.0
    latest, _ = timing.due(100.0, 135.0, 2)
    assert latest == [120.0, 130.0]
    assert timing.due(100.0, 99.0, 5) == ([], 100.0)


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("61 * * * *", "cron: '61 * * * *' is not a valid cron expression"),
        ("* * *", "cron: '* * *' has 3 fields"),
        ("hello", "has 1 fields"),
        ("0  3 * * *", "(fields separated by single spaces"),
        ("0 3 * * L", "is not a valid cron expression (fields"),
    ],
)
def test_a_bad_cron_expression_is_refused_naming_the_field(expr: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(needle)):
        check_cron(expr)


def test_macros_are_cron_expressions() -> None:
    check_cron("@hourly")
    assert Timing("@daily", None, "UTC").first_after(ts("2026-01-01T10:00:00+00:00")) == ts(
        "2026-01-02T00:00:00+00:00"
    )


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_an_unknown_time_zone_is_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError, match="timezone: unknown time zone"):
        zone(name)


def test_both_or_neither_of_cron_and_interval_is_refused() -> None:
    for timing in (Timing("* * * * *", 5.0, "UTC"), Timing(None, None, "UTC")):
        with pytest.raises(ValidationError, match="cron, interval: give exactly one"):
            timing.check()


def test_a_cron_expression_naming_no_date_never_fires() -> None:
    # As in Vixie cron: accepted (it is valid), and it has no next run time.
    for expr in ("0 0 30 2 *", "0 0 31 4,6 *"):
        check_cron(expr)
        timing = Timing(expr, None, "UTC")
        assert timing.first_after(ts("2026-01-01T00:00:00+00:00")) is None
        assert (
            timing.due(ts("2026-01-01T00:00:00+00:00"), ts("2026-06-01T00:00:00+00:00"), 5)[1]
            is None
        )
