"""The handler registry: built from modules or iterables, refuses ambiguity, calls handlers."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tq
from tq.client.task import handler, task
from tq.errors import ConfigError
from tq.worker import Reject, Worker, run_worker
from tq.worker.context import TaskContext
from tq.worker.pools import run_async, run_sync
from tq.worker.registry import Registry, handlers_of, import_handlers


@task
def add(a: int, b: int) -> int:
    return a + b


@task(name="math.mul")
async def mul(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


@handler("upper")
def upper(payload: bytes) -> bytes:
    return payload.upper()


@handler("wrong")
def wrong(payload: bytes) -> bytes:
    return payload.decode()  # type: ignore[return-value]  # the mistake under test


def ctx() -> TaskContext:
    return TaskContext(raw_id=b"\0" * 16, task_type="t", queue="q", attempt=1, max_retries=0)


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "reg_handlers.py").write_text(
        "import tq\n"
        "@tq.handler('a')\n"
        "def a(p): return p\n"
        "@tq.task\n"
        "def b(x: int) -> int: return x\n"
        "not_a_handler = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "reg_handlers"
    sys.modules.pop("reg_handlers", None)


def test_a_module_registers_every_handler_it_holds(module: str) -> None:
    registry = Registry.from_source(import_handlers(module))
    assert registry.names() == ["a", "reg_handlers.b"]
    assert registry.modules() == ["reg_handlers"]


def test_an_iterable_registers_exactly_its_handlers() -> None:
    registry = Registry([add, mul, upper])
    assert registry.names() == ["math.mul", f"{__name__}.add", "upper"]
    assert registry.get("nope") is None


def test_two_handlers_for_one_name_are_refused_naming_both() -> None:
    other = handler("upper")(lambda payload: payload)
    with pytest.raises(ConfigError, match="two handlers for task type 'upper'"):
        Registry([upper, other])


def test_the_same_handler_twice_is_not_a_duplicate() -> None:
    assert Registry([upper, upper]).names() == ["upper"]


def test_a_plain_function_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"@tq.task or @tq.handler"):
        Registry([len])  # type: ignore[list-item]


def test_a_module_that_fails_to_import_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="cannot import handlers module 'no_such_mod_xyz'"):
        import_handlers("no_such_mod_xyz")


def test_an_empty_module_gives_an_empty_registry() -> None:
    assert len(Registry.from_source(types.ModuleType("empty"))) == 0


def test_a_task_function_gets_its_arguments_and_encodes_its_result() -> None:
    registry = Registry([add, mul])
    h = registry.get(f"{__name__}.add")
    assert h is not None and not h.is_async
    result = run_sync(h, ctx(), add.encode_args((2, 3), {}))
    assert (result.ok, add.decode_result(result.result or b"")) == (True, 5)
    h2 = registry.get("math.mul")
    assert h2 is not None and h2.is_async
    result = asyncio.run(run_async(h2, ctx(), mul.encode_args((4,), {"b": 5})))
    assert (result.ok, mul.decode_result(result.result or b"")) == (True, 20)


def test_arguments_that_do_not_decode_are_rejected_not_retried() -> None:
    h = Registry([add]).get(f"{__name__}.add")
    assert h is not None
    result = run_sync(h, ctx(), b'{"args": ["two", 3]}')
    assert (result.ok, result.retry, result.error_type) == (False, False, "Reject")
    with pytest.raises(Reject):
        h.call_sync(b"not json")


def test_a_raw_handler_must_return_bytes() -> None:
    h = Registry([upper, wrong]).get("wrong")
    assert h is not None
    result = run_sync(h, ctx(), b"x")
    assert (result.ok, result.error_type) == (False, "TypeError")
    assert "returned str" in (result.error or "")


def test_the_public_decorators_make_what_the_registry_accepts() -> None:
    assert Registry([tq.handler("x")(lambda p: p)]).names() == ["x"]


def test_several_modules_are_served_together(module: str) -> None:
    registry = Registry(handlers_of([module, "tq.worker.examples"]))
    assert registry.names() == ["a", "echo", "json", "reg_handlers.b", "sleep"]
    assert registry.modules() == ["reg_handlers", "tq.worker.examples"]


def test_a_module_without_handlers_is_refused_by_name(module: str) -> None:
    with pytest.raises(ConfigError, match=r"no tq handlers found in json$"):
        handlers_of([module, "json"])


def test_two_modules_naming_one_task_type_are_refused(module: str, tmp_path: Path) -> None:
    (tmp_path / "reg_clash.py").write_text("import tq\n@tq.handler('a')\ndef a(p): return p\n")
    try:
        with pytest.raises(ConfigError, match="two handlers for task type 'a'"):
            Registry(handlers_of([module, "reg_clash"]))
    finally:
        sys.modules.pop("reg_clash", None)


def test_run_worker_names_a_module_it_cannot_import() -> None:
    with pytest.raises(ConfigError, match="'no_such_handlers_here'"):
        run_worker("no_such_handlers_here", url="tq://127.0.0.1:1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be >= 1"),
        ({"pool": "fibers"}, "unknown worker pool 'fibers'"),
        ({"queues": ()}, "at least one queue"),
    ],
)
def test_a_worker_refuses_bad_options_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Worker([upper], url="tq://127.0.0.1:1", **options)


def test_a_worker_without_handlers_says_where_it_looked() -> None:
    with pytest.raises(ConfigError, match="no tq handlers found in empty_mod"):
        Worker(types.ModuleType("empty_mod"), url="tq://127.0.0.1:1")
