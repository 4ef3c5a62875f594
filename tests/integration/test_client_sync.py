"""The blocking Client and the ``@tq.task`` API from plain synchronous code, on a real broker.

A worker thread plays the worker with the TaskFunction's own ``decode_args`` and
``encode_result``, exactly what ``tq.worker`` does with a discovered handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tq
from tq.client import ClaimedTask, Client, TaskFunction, TaskOutcome
from tq.core.ids import parse_task_id
from tq.errors import ErrorCode, NotFoundError, TaskFailedError, UnavailableError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)


@dataclasses.dataclass
class Total:
    value: int
    label: str


@tq.task(queue="math")
def add(x: int, y: int, *, label: str = "sum") -> Total:
    return Total(x + y, label)


@tq.task("divide", queue="math")
def divide(x: int, y: int) -> float:
    return x / y


@tq.task(queue="math")
async def double(x: int) -> int:
    return 2 * x


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("broker") / "data") as b:
        yield b


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    with Client(broker.url) as c:
        tq.set_default_client(c)
        yield c
    tq.set_default_client(None)


def serve_one(url: str, tasks: list[TaskFunction[Any, Any]]) -> threading.Thread:
    """A thread that claims one task from "math" and runs it like tq.worker would."""
    by_name = {t.name: t for t in tasks}

    def run() -> None:
        with Client(url, client_kind="worker") as worker:
            claimed: list[ClaimedTask] = []
            while not claimed:
                claimed = worker.claim("sync-worker", ["math"], max_tasks=1, wait=1.0)
            (task,) = claimed
            fn = by_name[task.task_type]
            args, kwargs = fn.decode_args(task.payload)
            try:
                value = fn.fn(*args, **kwargs)
                if fn.is_async:
                    value = asyncio.run(value)
                outcome = TaskOutcome(
                    task_id=task.id, lease_token=task.lease_token, ok=True,
                    result=fn.encode_result(value),
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - any handler error is the task's failure
                outcome = TaskOutcome(
                    task_id=task.id, lease_token=task.lease_token, ok=False, error=str(e),
                    error_type=type(e).__name__, retry=False,
                )  # fmt: skip
            worker.report([outcome])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_sync_client_submits_inspects_and_cancels(client: Client) -> None:
    task_id = client.submit("plain", b"data", queue="sync-only")
    assert client.status(task_id).state == "pending"
    assert client.ping() > 0
    assert client.stats().pending >= 1
    tasks, _ = client.list_tasks(queue="sync-only")
    assert [t.task_type for t in tasks] == ["plain"]
    client.cancel(task_id)
    with pytest.raises(TaskFailedError) as info:
        client.result(task_id, timeout=5)
    assert info.value.code is ErrorCode.TASK_CANCELLED
    with pytest.raises(NotFoundError):
        client.status("01900000-0000-7000-8000-000000000000")


def test_messages_name_a_task_in_the_36_character_form_whatever_form_was_typed(
    client: Client,
) -> None:
    canonical = "01900000-0000-7000-8000-0000000000aa"
    for typed in (canonical.replace("-", ""), canonical.upper(), f"{{{canonical}}}"):
        with pytest.raises(NotFoundError) as status:
            client.status(typed)
        assert status.value.message == f"no task with id {canonical}"
        with pytest.raises(NotFoundError) as cancel:
            client.cancel(typed)
        assert canonical in cancel.value.message


def test_a_task_handle_returns_the_typed_result(client: Client, broker: BrokerProcess) -> None:
    worker = serve_one(broker.url, [add])
    handle = add.submit(2, 3, label="five")
    total: Total = handle.result(timeout=20)
    assert total == Total(5, "five")
    assert handle.status().state == "completed"
    worker.join(10)


def test_a_remote_exception_comes_back_as_task_failed(
    client: Client, broker: BrokerProcess
) -> None:
    worker = serve_one(broker.url, [divide])
    handle = divide.submit(1, 0)
    with pytest.raises(TaskFailedError) as info:
        handle.result(timeout=20)
    assert info.value.remote_type == "ZeroDivisionError"
    assert "division by zero" in info.value.message
    assert handle.wait(5).state == "dead_letter"
    worker.join(10)


def test_options_change_how_a_task_is_submitted(client: Client) -> None:
    handle = add.options(queue="elsewhere", priority=250, delay=3600).submit(1, 1)
    info = handle.status()
    assert (info.queue, info.priority, info.state) == ("elsewhere", 250, "scheduled")
    handle.cancel()
    assert handle.status().state == "cancelled"


def test_async_tasks_submit_through_the_loops_default_client(broker: BrokerProcess) -> None:
    worker = serve_one(broker.url, [double])

    async def scenario() -> int:
        async with tq.AsyncClient(broker.url) as aclient:
            tq.set_default_client(aclient)
            try:
                handle = await double.submit_async(21)
                return await handle.result(timeout=20)
            finally:
                tq.set_default_client(None)

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == 42
    worker.join(10)


def test_a_sync_subscription_is_a_blocking_iterator(client: Client) -> None:
    with client.subscribe(queues=["watched"]) as events:
        task_id = client.submit("t", queue="watched")
        event = next(iter(events))
    assert (event.state, event.task_type) == ("pending", "t")
    assert parse_task_id(task_id) == event.task_id


def test_a_client_used_from_many_threads_shares_one_connection(client: Client) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def submit_some() -> None:
        for _ in range(50):
            task_id = client.submit("t", queue="threads")
            with lock:
                ids.append(task_id)

    threads = [threading.Thread(target=submit_some) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 200


def test_a_client_after_close_refuses_calls(broker: BrokerProcess, tmp_path: Path) -> None:
    c = Client(broker.url)
    c.ping()
    c.close()
    c.close()  # idempotent
    with pytest.raises(UnavailableError, match="closed"):
        c.ping()
