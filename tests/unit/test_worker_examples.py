"""The shipped example handlers: echo, sleep and the JSON processor."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Iterator

import pytest

from tq.client.task import RawHandler
from tq.worker import Reject, examples
from tq.worker.examples import echo, json_summary, sleep
from tq.worker.registry import Handler, Registry


def call(source: RawHandler, payload: bytes) -> bytes:
    handler = Handler(source.name, source)
    result = (
        asyncio.run(handler.call_async(payload)) if handler.is_async else handler.call_sync(payload)
    )
    assert result is not None
    return result


def test_the_examples_module_registers_echo_sleep_and_json() -> None:
    assert Registry.from_source(examples).names() == ["echo", "json", "sleep"]


def test_echo_returns_any_payload_unchanged() -> None:
    assert call(echo, b"\x00\xffnot json") == b"\x00\xffnot json"


def test_sleep_sleeps_and_says_how_long() -> None:
    assert call(sleep, b'{"seconds": 0.01}') == b'{"slept":0.01}'


@pytest.mark.parametrize("payload", [b'{"seconds": -1}', b'{"seconds": "1"}', b"[]", b"{"])
def test_sleep_rejects_a_bad_payload(payload: bytes) -> None:
    with pytest.raises(Reject):
        call(sleep, payload)


def test_json_describes_an_object() -> None:
    payload = b'{"b": [1, {"c": null}], "a": 1}'
    summary = json.loads(call(json_summary, payload))
    assert summary == {
        "type": "object",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "depth": 3,
        "keys": ["a", "b"],
    }


def test_json_depth_counts_nested_containers_not_scalars() -> None:
    depths = [json.loads(call(json_summary, doc))["depth"] for doc in (b"1", b"{}", b'{"a": [1]}')]
    assert depths == [0, 1, 2]


@pytest.mark.parametrize(
    ("payload", "kind", "extra"),
    [(b"[1, 2, 3]", "array", {"length": 3}), (b'"abc"', "string", {"length": 3}),
     (b"1.5", "number", {"finite": True}), (b"true", "boolean", {}), (b"null", "null", {})],
)  # fmt: skip
def test_json_describes_every_json_type(
    payload: bytes, kind: str, extra: dict[str, object]
) -> None:
    summary = json.loads(call(json_summary, payload))
    assert summary["type"] == kind
    assert {k: summary[k] for k in extra} == extra


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """The decoder's depth limit follows sys.getrecursionlimit(), which other tests raise."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


@pytest.mark.usefixtures("default_recursion_limit")
def test_json_rejects_a_document_nested_beyond_the_decoders_limit() -> None:
    with pytest.raises(Reject, match="nested too deeply"):
        call(json_summary, b"[" * 5000 + b"]" * 5000)


def test_json_measures_depth_without_recursion() -> None:
    assert json.loads(call(json_summary, b"[" * 500 + b"]" * 500))["depth"] == 500


def test_json_rejects_invalid_json_naming_the_problem() -> None:
    with pytest.raises(Reject, match="not valid JSON"):
        call(json_summary, b"{'single': 'quotes'}")
