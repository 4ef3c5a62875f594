"""Schedules (a cron expression or a fixed interval, and the task each firing submits) as the
state machine keeps and stores them, with the rules of a valid one.

Pure: the machine never evaluates a cron expression or a time zone (replicas may hold other
tz databases). The caller (``tq.broker.cron``) computes every next firing time, and the
commands carry them; here only what needs no calendar is checked.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

import msgspec

from tq.core.model import PRIORITY_MAX, PRIORITY_MIN, RetryPolicy
from tq.errors import ValidationError

#: A schedule's name: it appears in REST paths and CLI arguments, so a conservative alphabet.
NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}")


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


def _field(value: str) -> str:
    item = rf"(?:\*|{value}(?:-{value})?)(?:/[1-9][0-9]{{0,2}})?"
    return rf"{item}(?:,{item})*"


_MINUTE = r"(?:[0-5]?[0-9])"
_HOUR = r"(?:[01]?[0-9]|2[0-3])"
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])"
_MONTHS: Final = (
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)  # fmt: skip
_WEEKDAYS: Final = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MONTH = "(?:0?[1-9]|1[0-2]|" + "|".join(map(_any_case, _MONTHS)) + ")"
_WEEKDAY = "(?:0?[0-7]|" + "|".join(map(_any_case, _WEEKDAYS)) + ")"
MACROS: Final = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: The cron grammar every door accepts (the REST schema publishes it as a pattern): five
#: fields ``minute hour day-of-month month day-of-week`` separated by single spaces, a sixth
#: of seconds last, or a macro; a field is ``*`` or a value or range, with a ``/step``, in a
#: comma-separated list; months and weekdays also by their three-letter names.
CRON: Final = re.compile(
    f"(?:{'|'.join(MACROS)}|{_field(_MINUTE)} {_field(_HOUR)} {_field(_DAY)} {_field(_MONTH)} "
    f"{_field(_WEEKDAY)}(?: {_field(_MINUTE)})?)"
)
#: The shortest interval between firings: one task per firing, at most once a second.
MIN_INTERVAL: Final = 1.0
#: Tags every task a schedule submits carries: which schedule, and for which time.
TAG_SCHEDULE: Final = "tq.schedule"
TAG_FIRE_TIME: Final = "tq.scheduled_for"


class Missed(StrEnum):
    """What happens to firings whose time passed while the broker was down (or too late):
    ``skip`` fires none of them, ``once`` fires one for the latest missed time, ``all`` fires
    each missed time (the latest ``broker.schedule_catch_up_max``)."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class TaskTemplate(msgspec.Struct, array_like=True, frozen=True):
    """The task each firing submits. ``max_retries`` None: the broker's default at firing
    time; ``expires_after``: each task expires that long after its scheduled time."""

    task_type: str
    queue: str
    payload: bytes = b""
    priority: int = 128
    max_retries: int | None = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    tags: dict[str, str] = {}
    expires_after: float | None = None


class Schedule(msgspec.Struct, array_like=True, frozen=True):
    """One schedule as stored under ``b"schedule/" + name``. Exactly one of ``cron`` (in
    ``timezone``) and ``interval`` (seconds) is set. ``next_at``: the time of its next firing
    (None while paused, or for a cron expression naming no date that exists, such as February
    30th, which as in Vixie cron is accepted and never fires); ``last_fired_at``: the
    scheduled time of its latest firing."""

    name: str
    cron: str | None
    interval: float | None
    timezone: str
    template: TaskTemplate
    missed: Missed
    paused: bool
    next_at: float | None
    last_fired_at: float | None
    fired: int
    created_at: float
    updated_at: float

    def same_definition(self, other: Schedule) -> bool:
        """Whether ``other`` asks for the same firings of the same task (a re-declaration
        that must keep this one's next firing time)."""
        return (
            self.cron == other.cron
            and self.interval == other.interval
            and self.timezone == other.timezone
            and self.template == other.template
            and self.missed is other.missed
        )


SCHEDULE_PREFIX: Final = b"schedule/"


def schedule_key(name: str) -> bytes:
    return SCHEDULE_PREFIX + name.encode()


_dec = msgspec.msgpack.Decoder(Schedule)


def decode_schedule(data: bytes) -> Schedule:
    return _dec.decode(data)


def validate_schedule(s: Schedule) -> None:
    """Raise ValidationError naming the first bad field (what needs no calendar: the caller
    checked the cron expression and the time zone when it computed ``next_at``)."""
    if NAME.fullmatch(s.name) is None:
        raise ValidationError(
            f"name: {s.name[:64]!r} is not a schedule name (1..200 of letters, digits and "
            "_.:@-, starting with a letter or digit)"
        )
    if (s.cron is None) == (s.interval is None):
        raise ValidationError(
            "cron, interval: give exactly one of a cron expression or an interval in seconds"
        )
    if s.cron is not None and CRON.fullmatch(s.cron) is None:
        raise ValidationError(f"cron: {s.cron[:200]!r} is not a cron expression")
    if s.interval is not None and not MIN_INTERVAL <= s.interval <= 1e10:
        raise ValidationError(f"interval: {s.interval:g} s is outside {MIN_INTERVAL:g}..1e10 s")
    if not s.timezone:
        raise ValidationError("timezone: empty (UTC is the default)")
    if s.paused and s.next_at is not None:
        raise ValidationError("next_at: a paused schedule has none")
    t = s.template
    if not t.task_type:
        raise ValidationError("task_type must not be empty")
    if not t.queue:
        raise ValidationError("queue must not be empty")
    if not PRIORITY_MIN <= t.priority <= PRIORITY_MAX:
        raise ValidationError(f"priority must be within 0..255, got {t.priority}")
    if t.max_retries is not None and t.max_retries < 0:
        raise ValidationError(f"max_retries must be >= 0, got {t.max_retries}")
    if t.timeout is not None and t.timeout <= 0:
        raise ValidationError(f"timeout must be > 0 seconds, got {t.timeout}")
    if t.expires_after is not None and t.expires_after <= 0:
        raise ValidationError(f"expires_after must be > 0 seconds, got {t.expires_after}")
    reserved = sorted(k for k in t.tags if k in (TAG_SCHEDULE, TAG_FIRE_TIME))
    if reserved:
        raise ValidationError(f"tags: {reserved[0]!r} is set by the schedule itself")
