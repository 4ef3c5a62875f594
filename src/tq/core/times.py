"""Instants as people type and read them, the same on every text interface (CLI, REST).

Read: an age before ``now`` (``30s``, ``10m``, ``2h``, ``3d``, ``1w``), unix seconds
(``1700000000``), or an RFC 3339 / ISO 8601 date-time (``2024-07-01T12:00:00Z``, or a date
alone); one without an offset is UTC, as every time tq prints is. Written: RFC 3339 in UTC with
the date, ``2024-07-01T12:00:00.000Z``. Pure: ``now`` is an argument, never a clock read.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final, Literal

#: Seconds per unit of an age.
AGE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?", re.IGNORECASE)

#: What ``parse_instant`` accepts, for error messages and help texts.
INSTANT_FORMS: Final = (
    "an RFC 3339 time (2024-07-01T12:00:00Z; no offset means UTC), unix seconds, "
    "or an age such as 30s, 10m, 2h, 3d"
)


def parse_instant(text: str, now: float) -> float:
    """Unix seconds of ``text`` (an age counts back from ``now``); ValueError naming the
    accepted forms otherwise. The result may still lie outside what a field allows: the
    caller checks its own bounds."""
    value = text.strip()
    if match := _AGE.fullmatch(value):
        return now - float(match[1]) * AGE_UNITS[match[2]]
    if _NUMBER.fullmatch(value):
        seconds = float(value)
        if math.isfinite(seconds):
            return seconds
    try:
        # fromisoformat reads "Z", a date alone and a space for "T" since Python 3.11.
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {INSTANT_FORMS}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError):  # pragma: no cover - fromisoformat bounds years first
        raise ValueError(f"{text!r} is out of range") from None


def format_instant(
    seconds: float, timespec: Literal["seconds", "milliseconds"] = "milliseconds"
) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2024-07-01T12:00:00.000Z`` (``timespec="seconds"``
    drops the fraction, for tables)."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec=timespec)
    return stamp.removesuffix("+00:00") + "Z"
