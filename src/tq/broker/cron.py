"""Firing times of schedules: cron expressions (``croniter``) in IANA time zones (``zoneinfo``)
and fixed intervals. Evaluated here, by the broker, never by the state machine: the commands
carry every time computed (replicas may hold other tz databases).

Daylight saving time, as Vixie cron does it: a wall-clock time skipped when clocks go forward
fires once, at the first instant after the gap (02:30 on a 02:00->03:00 day fires at 03:00);
a time repeated when clocks go back fires once, at its first occurrence, unless the hour field
is a wildcard (``*``, ``*/2``): those fire by elapsed time, so every real hour has its firing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from tq.core.schedules import CRON, MACROS, Schedule
from tq.errors import ValidationError

#: Macros croniter reads; those firing at a fixed hour skip a repeated wall-clock time.
_HOURLY_MACROS: Final = frozenset({"@hourly"})
_MACROS: Final = frozenset(MACROS)
#: Cron times examined in a row before a search gives up (no real expression needs many:
#: "0 0 29 2 *" finds its next time within 8 years; one naming no date, "0 0 30 2 *", makes
#: croniter give up by itself).
_MAX_STEPS: Final = 100_000


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValidationError naming the field if unknown."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"timezone: unknown time zone {name!r} (an IANA name such as UTC, Europe/Berlin, "
            "America/New_York)"
        ) from None


def check_cron(expr: str) -> None:
    """ValidationError naming the field and what is wrong: the grammar every door accepts
    (``tq.core.schedules.CRON``), then croniter's own reading."""
    if expr in _MACROS:
        return
    fields = expr.split(" ")
    if len(fields) not in (5, 6):
        raise ValidationError(
            f"cron: {expr!r} has {len(fields)} fields; a cron expression has 5 (minute hour "
            "day-of-month month day-of-week) separated by single spaces, or 6 with seconds "
            "last, or is a macro such as @hourly"
        )
    if CRON.fullmatch(expr) is None:
        raise ValidationError(
            f"cron: {expr!r} is not a valid cron expression (fields separated by single "
            "spaces, each *, a value or a range in its bounds, with an optional /step, "
            "comma-separated: minute 0-59, hour 0-23, day 1-31, month 1-12 or jan-dec, "
            "weekday 0-7 or sun-sat, seconds 0-59)"
        )
    try:
        croniter(expr)
    except (CroniterError, ValueError, KeyError) as e:
        raise ValidationError(f"cron: {expr!r} is not a valid cron expression ({e})") from None


@dataclass(frozen=True)
class Timing:
    """What a schedule's firing times depend on: its cron expression in a zone, or an
    interval."""

    cron: str | None
    interval: float | None
    timezone: str

    @classmethod
    def of(cls, s: Schedule) -> Timing:
        return cls(s.cron, s.interval, s.timezone)

    def check(self) -> None:
        """ValidationError naming the first bad field."""
        if (self.cron is None) == (self.interval is None):
            raise ValidationError(
                "cron, interval: give exactly one of a cron expression or an interval in seconds"
            )
        if self.cron is not None:
            check_cron(self.cron)
        zone(self.timezone)

    def first_after(self, now: float) -> float | None:
        """The first firing strictly after ``now`` (of a schedule created or resumed now);
        None for a cron expression naming no date that exists (``0 0 30 2 *``)."""
        if self.interval is not None:
            return now + self.interval
        assert self.cron is not None
        return _cron_next(self.cron, zone(self.timezone), now)

    def due(self, next_at: float, now: float, most: int) -> tuple[list[float], float | None]:
        """The latest ``most`` firing times in ``next_at..now`` (ascending; ``next_at`` is one
        of this timing's times), and the first firing time after ``now`` (if any)."""
        if self.interval is not None:
            step = self.interval
            n = math.floor((now - next_at) / step) + 1 if now >= next_at else 0
            times = [next_at + k * step for k in range(max(0, n - most), n)]
            return times, next_at + n * step
        assert self.cron is not None
        tz = zone(self.timezone)
        times = _cron_latest(self.cron, tz, next_at, now, most)
        return times, _cron_next(self.cron, tz, now)


def _hour_is_wildcard(expr: str) -> bool:
    e = expr.strip()
    if e in _MACROS:
        return e in _HOURLY_MACROS
    return "*" in e.split()[1]


def _repeated(ts: float, tz: ZoneInfo) -> bool:
    """Whether ``ts`` is the second occurrence of a wall-clock time (clocks went back)."""
    local = datetime.fromtimestamp(ts, tz)
    if local.fold == 0:
        return False
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset()


def _cron_next(expr: str, tz: ZoneInfo, after: float) -> float | None:
    it = croniter(expr, datetime.fromtimestamp(after, tz))
    skip_repeats = not _hour_is_wildcard(expr)
    try:
        for _ in range(_MAX_STEPS):
            ts = float(it.get_next(float))
            if ts > after and not (skip_repeats and _repeated(ts, tz)):
                return ts
    except CroniterError:  # croniter searched its horizon (decades): no such date
        pass
    return None


def _cron_latest(expr: str, tz: ZoneInfo, first: float, now: float, most: int) -> list[float]:
    """The latest ``most`` cron times in ``first..now``, ascending: searched backwards from
    now, so a long outage costs ``most`` steps, not one per missed time."""
    # croniter's get_prev is strictly before its start: start just after the whole second
    # holding ``now``, then drop what lies after ``now`` (cron times are whole seconds).
    it = croniter(expr, datetime.fromtimestamp(math.floor(now), tz) + timedelta(seconds=1))
    skip_repeats = not _hour_is_wildcard(expr)
    out: list[float] = []
    try:
        for _ in range(_MAX_STEPS):
            if len(out) >= most:
                break
            ts = float(it.get_prev(float))
            if ts < first:
                break
            if ts > now or (skip_repeats and _repeated(ts, tz)):
                continue
            out.append(ts)
    except CroniterError:  # no earlier date within croniter's horizon
        pass
    out.reverse()
    return out
