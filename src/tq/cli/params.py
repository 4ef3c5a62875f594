"""Click parameter types whose bounds are read from the wire messages (``tq.protocol``).

The broker refuses a value by its wire path (``$.tasks[0].task_type``); the CLI checks the same
bounds first, read from the same message types, so the error names what the user typed
(``TYPE``, ``--limit``) and nothing is sent. Times use ``tq.core.times``, as REST does.
"""

from __future__ import annotations

import time
from typing import Any

import click
import msgspec
from msgspec import inspect as mi

from tq.core.ids import format_task_id, parse_task_id
from tq.core.times import TEXT_FORMS, format_rfc3339, parse_instant
from tq.errors import ValidationError


def wire_field(struct: type[msgspec.Struct], name: str) -> mi.Type:
    """The type of field ``name`` of a wire struct, without its ``| None``."""
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    (field,) = (f for f in info.fields if f.name == name)
    kind = field.type
    if isinstance(kind, mi.UnionType):
        (kind,) = (t for t in kind.types if not isinstance(t, mi.NoneType))
    return kind


def wire_bounds(struct: type[msgspec.Struct], name: str) -> tuple[float | None, float | None]:
    """The inclusive (low, high) of a numeric wire field (None: unbounded on that side)."""
    kind = wire_field(struct, name)
    assert isinstance(kind, mi.IntType | mi.FloatType)
    return kind.ge if kind.ge is not None else kind.gt, kind.le if kind.le is not None else kind.lt


def wire_type(struct: type[msgspec.Struct], name: str) -> click.ParamType[Any]:
    """A click type refusing what the broker refuses in field ``name`` of ``struct``."""
    kind = wire_field(struct, name)
    if isinstance(kind, mi.IntType):
        low = kind.ge if kind.ge is not None else (None if kind.gt is None else kind.gt + 1)
        high = kind.le if kind.le is not None else (None if kind.lt is None else kind.lt - 1)
        return click.IntRange(low, high)
    if isinstance(kind, mi.FloatType):
        return click.FloatRange(
            kind.ge if kind.ge is not None else kind.gt,
            kind.le if kind.le is not None else kind.lt,
            min_open=kind.gt is not None,
            max_open=kind.lt is not None,
        )
    if isinstance(kind, mi.StrType):
        return Text(kind.min_length or 0, kind.max_length)
    raise TypeError(f"no CLI type for {struct.__name__}.{name} ({kind})")


class Text(click.ParamType[str]):
    """Text of ``min_length`` to ``max_length`` characters (names: types, queues, keys)."""

    name = "text"

    def __init__(self, min_length: int, max_length: int | None) -> None:
        self.min_length = min_length
        self.max_length = max_length

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if len(text) < self.min_length:
            self.fail("must not be empty" if not text else f"{text!r} is too short", param, ctx)
        if self.max_length is not None and len(text) > self.max_length:
            self.fail(
                f"is {len(text)} characters long, above the limit of {self.max_length}", param, ctx
            )
        return text


class TaskIdType(click.ParamType[str]):
    """A task id, in the 36-character form every interface prints; returned in that form."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return format_task_id(parse_task_id(str(value)))
        except ValidationError:
            self.fail(
                f"{value!r} is not a task id (36 characters, such as "
                "0190a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b)",
                param,
                ctx,
            )


class InstantType(click.ParamType[float]):
    """A time as ``tq.core.times`` reads it, within ``low``..``high`` (unix seconds)."""

    name = "time"

    def __init__(self, low: float | None, high: float | None) -> None:
        self.low = low
        self.high = high

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_instant(str(value), time.time())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.low is not None and seconds < self.low:
            self.fail(f"{value!r} is before {format_rfc3339(self.low, 'seconds')}", param, ctx)
        if self.high is not None and seconds > self.high:
            self.fail(f"{value!r} is after {format_rfc3339(self.high, 'seconds')}", param, ctx)
        return seconds


TASK_ID = TaskIdType()
#: For help texts of time options.
TIME_HELP = TEXT_FORMS
