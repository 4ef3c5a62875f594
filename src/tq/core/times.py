"""Times as people and programs type them, read and written the same way by every interface
(REST, the CLI): RFC 3339 date-times with an offset, unix seconds, and ages ("10m": ten
minutes ago). Pure: the current time is an argument, and nothing here reads a clock.

Rules: a date-time without an offset is refused (UTC or local time would be a guess); an
RFC 3339 instant outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z is taken as the nearer
end, as every instant before the epoch is equally past for a queue (and so is an age older
than the epoch); unix seconds outside that range are refused, as a number names its bound.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final, Literal

#: Latest instant any field may carry: 9999-12-31T23:59:59Z, the last RFC 3339 second.
MAX_INSTANT: Final = 253_402_300_799.0

AGE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNIX = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: The same grammars as JSON Schema patterns (ECMA 262 reads these as Python does).
AGE_PATTERN: Final = f"^{_AGE.pattern}$"
UNIX_PATTERN: Final = f"^{_UNIX.pattern}$"
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NO_OFFSET = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]*")
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

FORMS: Final = "RFC 3339 (e.g. 2024-07-01T12:00:00Z, 2024-07-01T14:00:00+02:00)"
AGE_FORMS: Final = "an age such as 30s, 10m, 2h, 1d or 1w (that long ago)"
#: Every form a text interface (a CLI option, a REST query parameter) reads, for help texts.
TEXT_FORMS: Final = f"{FORMS}, unix seconds, or {AGE_FORMS}"


def parse_instant(text: str, now: float | None = None, *, unix: bool = True) -> float:
    """Unix seconds of ``text``: RFC 3339, unix seconds (unless ``unix`` is false: JSON
    carries them as numbers), and an age before ``now`` when ``now`` is given (ages are
    refused otherwise). ValueError names the forms accepted."""
    named = [FORMS, *(["unix seconds"] if unix else []), *([AGE_FORMS] if now is not None else [])]
    forms = " or ".join(named) if len(named) < 3 else f"{named[0]}, {named[1]} or {named[2]}"
    if _AGE.fullmatch(text):
        if now is None:
            raise ValueError(f"{text!r} is an age, not a time: use {forms}")
        return parse_age(text, now)
    if _UNIX.fullmatch(text.removeprefix("-")):
        if not unix:
            raise ValueError(f"{text!r} is text: give unix seconds as a number, or {forms}")
        seconds = float(text)
        if not 0 <= seconds <= MAX_INSTANT:
            raise ValueError(f"{text} unix seconds is outside 0..{MAX_INSTANT:.0f}")
        return seconds
    if (seconds_or_none := parse_rfc3339(text)) is not None:
        return seconds_or_none
    if _DATE_ONLY.fullmatch(text):
        raise ValueError(f"{text!r} is a date: give a time too, e.g. {text}T00:00:00Z")
    if _NO_OFFSET.fullmatch(text):
        raise ValueError(
            f"{text!r} has no UTC offset: add Z for UTC or an offset such as +02:00 "
            "(RFC 3339, e.g. 2024-07-01T12:00:00Z)"
        )
    raise ValueError(f"{text!r} is not a time: use {forms}")


def parse_age(text: str, now: float) -> float:
    """The instant ``text`` ("90s", "10m", "1.5h") before ``now``; never before the epoch."""
    match = _AGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not {AGE_FORMS}")
    return max(0.0, now - float(match[1]) * AGE_UNITS[match[2]])


def parse_rfc3339(text: str) -> float | None:
    """Unix seconds of an RFC 3339 date-time (clamped to 0..MAX_INSTANT); None if ``text``
    is not of that form; ValueError if it is, but names no real day, hour or offset."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise ValueError(f"{text!r}: {year:04d}-{month:02d}-{day:02d} is not a date")
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        raise ValueError(f"{text!r}: {hour:02d}:{minute:02d}:{second:02d} is not a time of day")
    offset = 0
    if m[8] is None:
        off_h, off_m = int(m[10]), int(m[11])
        if off_h > 23 or off_m > 59:
            raise ValueError(f"{text!r}: {m[9]}{m[10]}:{m[11]} is not a UTC offset")
        offset = (off_h * 3600 + off_m * 60) * (1 if m[9] == "+" else -1)
    seconds = _days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    unix = seconds - offset + (float(m[7]) if m[7] else 0.0)
    return min(max(unix, 0.0), MAX_INSTANT)


def format_rfc3339(
    unix: float, timespec: Literal["seconds", "milliseconds"] = "milliseconds"
) -> str:
    """``2024-07-01T12:00:00.123Z``: UTC, with the date, to the millisecond (to the second
    with ``timespec="seconds"``, for tables)."""
    if not math.isfinite(unix) or not 0 <= unix <= MAX_INSTANT:
        raise ValueError(f"{unix} is not an instant between 0 and {MAX_INSTANT:.0f}")
    when = datetime.fromtimestamp(unix, UTC)
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")


def _days_in_month(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 in the proleptic Gregorian calendar (any year 0000-9999, which
    ``datetime`` cannot all hold), by H. Hinnant's days_from_civil."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
