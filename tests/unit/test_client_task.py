"""``@tq.task``: names, default options, ``options()`` copies, local calls, handler discovery."""

from __future__ import annotations

import asyncio
import types

import tq
from tq.client import AsyncTaskFunction, RawHandler, SyncTaskFunction, TaskFunction
from tq.protocol import RetrySpec


@tq.task
def add(x: int, y: int) -> int:
    return x + y


@tq.task("mail.send", queue="mail", priority=200, max_retries=5, timeout=30.0)
async def send(to: str) -> str:
    return f"sent to {to}"


def test_a_task_is_named_after_its_module_and_qualname_unless_named() -> None:
    assert add.name == f"{__name__}.add"
    assert send.name == "mail.send"
    named = tq.task(name="explicit")(lambda: None)
    assert named.name == "explicit"


def test_calling_a_task_runs_the_function_locally() -> None:
    assert add(2, 3) == 5
    assert asyncio.run(send("bob")) == "sent to bob"


def test_sync_and_async_functions_make_the_matching_task_kind() -> None:
    assert isinstance(add, SyncTaskFunction)
    assert isinstance(send, AsyncTaskFunction)
    assert isinstance(add, TaskFunction)
    assert isinstance(send, TaskFunction)
    assert not add.is_async
    assert send.is_async


def test_decorator_options_become_submit_defaults() -> None:
    assert send.submit_options == {
        "queue": "mail",
        "priority": 200,
        "max_retries": 5,
        "timeout": 30.0,
    }
    assert send.timeout == 30.0
    assert add.submit_options == {"queue": "default", "priority": 128}
    assert add.timeout is None


def test_options_returns_a_copy_with_other_defaults_and_leaves_the_original() -> None:
    retry = RetrySpec(base=0.5)
    urgent = add.options(priority=250, delay=2.0, depends_on=["x"], retry=retry)
    assert isinstance(urgent, SyncTaskFunction)
    assert urgent is not add
    assert urgent.name == add.name
    assert urgent.fn is add.fn
    assert urgent(1, 1) == 2
    assert urgent.submit_options == {
        "queue": "default",
        "priority": 250,
        "delay": 2.0,
        "depends_on": ["x"],
        "retry": retry,
    }
    assert add.submit_options == {"queue": "default", "priority": 128}
    slower = send.options(timeout=60.0)
    assert isinstance(slower, AsyncTaskFunction)
    assert (slower.timeout, send.timeout) == (60.0, 30.0)


def test_a_task_may_opt_out_of_priority_aging_in_the_decorator_or_per_call() -> None:
    @tq.task("reports.nightly", priority=10, aging=False)
    def nightly() -> None: ...

    assert nightly.submit_options == {"queue": "default", "priority": 10, "aging": False}
    assert add.options(aging=False).submit_options["aging"] is False


def test_a_worker_finds_tasks_and_handlers_by_scanning_a_module() -> None:
    module = types.ModuleType("handlers")

    @tq.handler("resize")
    def resize(payload: bytes) -> bytes:
        return payload

    module.add = add  # type: ignore[attr-defined]
    module.resize = resize  # type: ignore[attr-defined]
    module.helper = len  # type: ignore[attr-defined]
    found = [v for v in vars(module).values() if isinstance(v, TaskFunction | RawHandler)]
    assert found == [add, resize]
