"""Task payloads and results: JSON on the wire, typed by the function's annotations."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import msgspec
import pytest

import tq
from tq.errors import ValidationError


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Box(msgspec.Struct):
    label: str
    items: list[int]


@tq.task
def shift(p: Point, by: int = 1, *, when: dt.datetime | None = None) -> Point:
    return Point(p.x + by, p.y + by)


@tq.task
def summarize(*values: float, **labels: str) -> dict[str, float]:
    return {name: sum(values) for name in labels}


@tq.task
def untyped(a, b):  # type: ignore[no-untyped-def]
    return [a, b]


@tq.task
def pack(box: Box) -> Box:
    return box


@tq.task
def nothing() -> None:
    return None


def test_the_payload_is_plain_json_any_language_can_write() -> None:
    payload = summarize.encode_args([1, 2.5], {"a": "x"})
    assert payload == b'{"args":[1,2.5],"kwargs":{"a":"x"}}'
    assert summarize.decode_args(b'{"args":[1,2.5],"kwargs":{"a":"x"}}') == (
        [1.0, 2.5],
        {"a": "x"},
    )


def test_missing_args_or_kwargs_in_a_payload_mean_none_given() -> None:
    assert nothing.decode_args(b"{}") == ([], {})


def test_arguments_round_trip_as_the_annotated_types() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    payload = shift.encode_args([Point(1, 2)], {"by": 3, "when": when})
    args, kwargs = shift.decode_args(payload)
    assert args == [Point(1, 2)]
    assert kwargs == {"by": 3, "when": when}
    assert shift(*args, **kwargs) == Point(4, 5)


def test_extra_positional_and_keyword_arguments_use_the_star_annotations() -> None:
    args, kwargs = summarize.decode_args(summarize.encode_args([1, 2], {"total": "t"}))
    assert args == [1.0, 2.0]
    assert all(isinstance(a, float) for a in args)
    assert kwargs == {"total": "t"}


def test_msgspec_structs_round_trip_as_arguments_and_results() -> None:
    box = Box("b", [1, 2])
    args, _ = pack.decode_args(pack.encode_args([box], {}))
    assert args == [box]
    result = pack.decode_result(pack.encode_result(box))
    assert result == box
    assert isinstance(result, Box)


def test_results_decode_to_the_return_annotation() -> None:
    data = shift.encode_result(Point(7, 8))
    assert data == b'{"x":7,"y":8}'
    point: Point = shift.decode_result(data)
    assert point == Point(7, 8)
    assert nothing.decode_result(nothing.encode_result(None)) is None


def test_unannotated_functions_decode_plain_json() -> None:
    args, _kwargs = untyped.decode_args(untyped.encode_args([{"k": [1]}, "s"], {}))
    assert args == [{"k": [1]}, "s"]
    result: Any = untyped.decode_result(untyped.encode_result([1, "two"]))
    assert result == [1, "two"]


def test_arguments_that_are_not_json_are_refused_naming_the_task() -> None:
    with pytest.raises(ValidationError, match=r"test_client_payload\.shift"):
        shift.encode_args([object()], {})


def test_a_result_that_is_not_json_is_refused_naming_its_type() -> None:
    with pytest.raises(ValidationError, match="object"):
        untyped.encode_result(object())


def test_a_payload_that_does_not_fit_the_parameters_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"\$\.x|x"):
        shift.decode_args(b'{"args":[{"x":"one","y":2}]}')
    with pytest.raises(ValidationError):
        shift.decode_args(b"not json")
    with pytest.raises(ValidationError):
        shift.decode_result(b'{"x":1}')


def test_a_raw_handler_keeps_its_function_name_and_timeout() -> None:
    @tq.handler("resize", timeout=5.0)
    def resize(payload: bytes) -> bytes:
        return payload[::-1]

    @tq.handler("thumb")
    async def thumb(payload: bytes) -> None:
        return None

    assert (resize.name, resize.timeout, resize.is_async) == ("resize", 5.0, False)
    assert resize(b"ab") == b"ba"
    assert resize.fn(b"xy") == b"yx"
    assert (thumb.name, thumb.timeout, thumb.is_async) == ("thumb", None, True)
