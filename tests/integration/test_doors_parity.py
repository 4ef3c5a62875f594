"""Parity: the same scenario through every door (TCP, REST, WebSocket, gRPC) shows a user the
same thing — results, error codes, the service's messages, events and their order — because
every door is a thin adapter over one service (issue 8, item 6).

Transports differ where they must: a validation error is worded by each door's own decoder
(only its code is compared), the TCP protocol answers an unknown id with nil and CANCEL_TASK
per-item codes without messages, and WebSocket is REST plus events. Messages naming a task id are
compared with the id replaced, since each door works on tasks of its own. Management actions
(ACT_ON_TASKS, ACT_ON_FILTER) carry the service's per-task messages on TCP too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.integration.doors import (
    Door,
    Err,
    Event,
    GrpcDoor,
    RestDoor,
    TcpDoor,
    View,
    Worker,
    open_doors,
)
from tests.integration.rawconn import RawConn
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.websocket_enabled": True, "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": False, "broker.max_payload_size_bytes": 4096,
}  # fmt: skip
SUBMITTING = ("tcp", "rest", "grpc")  # the WebSocket door submits through REST
WATCHING = ("tcp", "ws", "grpc")
MANAGING = ("tcp", "rest", "grpc")  # retry, delete and bulk: ACT_ON_TASKS, ACT_ON_FILTER
WORDING_READS = ("rest", "grpc")  # a TCP read answers an unknown id with nil, no message
UNKNOWN = "00000000-0000-7000-8000-00000000abcd"
T = TypeVar("T")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("parity") / "d", settings=SETTINGS) as b:
        yield b


def run(broker: BrokerProcess, scenario: Callable[[dict[str, Door]], Awaitable[T]]) -> T:
    async def main() -> T:
        async with asyncio.timeout(90), open_doors(broker.ports) as doors:
            return await scenario(doors)

    return asyncio.run(main())


def queue() -> str:
    return f"parity-{uuid.uuid4().hex[:10]}"


def same(by_door: dict[str, T]) -> T:
    """Every door's observation is equal; that observation."""
    first, *rest = by_door.items()
    for name, seen in rest:
        assert seen == first[1], f"{name} differs from {first[0]}:\n{seen}\n!=\n{first[1]}"
    return first[1]


def masked(err: Err | None, *ids: str) -> tuple[int, str] | None:
    """An error with task ids replaced (each door works on its own tasks)."""
    if err is None:
        return None
    message = err.message
    for i, task_id in enumerate(ids):
        message = message.replace(task_id, f"<id{i}>")
    return err.code, message


def unqueued(view: View) -> View:
    """``view`` with its queue masked (each door works on a queue of its own)."""
    return dataclasses.replace(view, queue="<q>")


async def tcp_worker(broker: BrokerProcess) -> Worker:
    return Worker(await RawConn.open(broker.ports["port"]), f"parity-{uuid.uuid4().hex[:6]}")


async def completed_task(doors: dict[str, Door], w: Worker, q: str, result: bytes) -> str:
    submitted = await doors["rest"].submit({"task_type": "t", "queue": q})
    assert not isinstance(submitted, Err), submitted
    task_id, token = await w.claim(q)
    assert task_id == submitted[0]
    await w.finish(task_id, token, result=result)
    return task_id


def test_submits_are_answered_alike_by_every_door(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name in SUBMITTING:
            door, q = doors[name], queue()
            ok = await door.submit({"task_type": "t", "queue": q, "payload": "hi"})
            assert not isinstance(ok, Err), (name, ok)
            view = await door.get(ok[0])
            first = await door.submit({"task_type": "t", "queue": q, "idempotency_key": q})
            again = await door.submit({"task_type": "t", "queue": q, "idempotency_key": q})
            assert not isinstance(first, Err) and not isinstance(again, Err)
            taken = await door.submit({"task_type": "t", "queue": q, "id": ok[0]})
            assert isinstance(taken, Err)
            dependency = await door.submit({"task_type": "t", "queue": q, "depends_on": [UNKNOWN]})
            too_big = await door.submit({"task_type": "t", "queue": q, "payload": "x" * 5000})
            both = await door.submit({"task_type": "t", "queue": q, "delay": 5.0,
                                      "scheduled_at": 2e9})  # fmt: skip
            assert isinstance(both, Err)
            priority = await door.submit({"task_type": "t", "queue": q, "priority": 300})
            assert isinstance(priority, Err)
            forever = await door.submit({"task_type": "t", "queue": q, "delay": 1e11})
            assert isinstance(forever, Err)
            still = await door.get(ok[0])  # after the refusals, the same door still serves
            seen[name] = {
                "created": ok[1],
                "view": view if isinstance(view, Err) else unqueued(view),
                "duplicate": (first[1], again[1], again[0] == first[0]),
                "taken": masked(taken, ok[0]),
                "dependency": masked(dependency if isinstance(dependency, Err) else None),
                "too_big": masked(too_big if isinstance(too_big, Err) else None),
                # Worded by each door's own decoder: the code is what must agree.
                "validation": (priority.code, both.code, forever.code),
                "still_served": still == view,
            }
        return seen

    by_door = run(broker, scenario)
    seen = same(by_door)
    assert seen["created"] is True
    assert seen["view"] == View("pending", "<q>", "t", 128, 0, None, None)
    assert seen["duplicate"] == (True, False, True)
    assert seen["taken"] == (3001, "tasks[0].id: a task with id <id0> already exists")
    assert seen["dependency"] == (3004, f"tasks[0].depends_on: no task with id {UNKNOWN}")
    assert seen["too_big"][0] == 2001
    # A value outside a field's constraint is INVALID_ARGUMENT from every door (over TCP a
    # request error: the connection carries on).
    assert seen["validation"] == (2000, 2000, 2000)
    assert seen["still_served"] is True


def test_a_task_reads_the_same_through_every_door(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, Any]:
        w = await tcp_worker(broker)
        task_id = await completed_task(doors, w, queue(), b"the result")
        await w.conn.close()
        seen = {}
        for name in SUBMITTING:
            view = await doors[name].get(task_id)
            missing = await doors[name].get(UNKNOWN)
            assert isinstance(view, View) and isinstance(missing, Err)
            seen[name] = (unqueued(view), missing.code)
        managing = {n: masked(await doors[n].get(UNKNOWN)) for n in WORDING_READS}  # type: ignore[arg-type]
        same(managing)
        return seen

    view, missing = same(run(broker, scenario))
    assert view == View("completed", "<q>", "t", 128, 1, b"the result", None)
    assert missing == 3000


def test_every_door_sees_the_same_events_in_the_same_order(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, list[Event]]:
        q = queue()
        watchers = {}
        for name in WATCHING:
            watcher = await doors[name].watch(queues=[q])
            assert not isinstance(watcher, Err), (name, watcher)
            watchers[name] = watcher
        w = await tcp_worker(broker)
        done = await completed_task(doors, w, q, b"ok")
        failing = await doors["rest"].submit({"task_type": "t", "queue": q, "max_retries": 0})
        assert not isinstance(failing, Err)
        task_id, token = await w.claim(q)
        await w.finish(task_id, token, error="boom")
        cancelled = await doors["grpc"].submit({"task_type": "t", "queue": q, "delay": 3600.0})
        assert not isinstance(cancelled, Err)
        assert await doors["tcp"].cancel(cancelled[0]) is None
        await w.conn.close()
        seen = {name: await watcher.until(8) for name, watcher in watchers.items()}
        for watcher in watchers.values():
            await watcher.close()
        ids = {done: "<done>", failing[0]: "<failed>", cancelled[0]: "<cancelled>"}
        return {
            name: [dataclasses.replace(e, task_id=ids[e.task_id]) for e in events]
            for name, events in seen.items()
        }

    events = same(run(broker, scenario))
    assert [(e.task_id, e.state) for e in events] == [
        ("<done>", "pending"), ("<done>", "in_progress"), ("<done>", "completed"),
        ("<failed>", "pending"), ("<failed>", "in_progress"), ("<failed>", "dead_letter"),
        ("<cancelled>", "scheduled"), ("<cancelled>", "cancelled"),
    ]  # fmt: skip
    assert events[2].result == b"ok"
    assert events[5].error == "boom"


def test_a_late_watch_of_a_finished_task_gets_its_final_event_alike(
    broker: BrokerProcess,
) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, Any]:
        w = await tcp_worker(broker)
        task_id = await completed_task(doors, w, queue(), b"late")
        await w.conn.close()
        seen: dict[str, Any] = {}
        for name in WATCHING:
            watcher = await doors[name].watch(ids=[task_id], until_terminal=True)
            unknown = await doors[name].watch(ids=[UNKNOWN], until_terminal=True)
            assert not isinstance(watcher, Err) and isinstance(unknown, Err), (name, unknown)
            (event,) = await watcher.until(1)
            if name == "grpc":  # an until_terminal stream ends after the last task's event
                assert watcher.task is not None
                async with asyncio.timeout(10):
                    await asyncio.shield(watcher.task)
            await watcher.close()
            seen[name] = (event.state, event.result, event.attempts, masked(unknown))
        return seen

    state, result, attempts, unknown = same(run(broker, scenario))
    assert (state, result, attempts) == ("completed", b"late", 1)
    assert unknown == (3000, f"no task with id {UNKNOWN}")


def test_management_actions_answer_alike(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, Any]:
        w = await tcp_worker(broker)
        seen: dict[str, Any] = {}
        for name in MANAGING:
            door = doors[name]
            assert isinstance(door, TcpDoor | RestDoor | GrpcDoor)
            q = queue()
            done = await completed_task(doors, w, q, b"x")
            live = await door.submit({"task_type": "t", "queue": q, "delay": 3600.0})
            assert not isinstance(live, Err)
            dead_parent = await door.submit({"task_type": "t", "queue": q, "delay": 3600.0})
            assert not isinstance(dead_parent, Err)
            dead = await door.submit({"task_type": "t", "queue": q,
                                      "depends_on": [dead_parent[0]]})  # fmt: skip
            assert not isinstance(dead, Err)
            assert await door.cancel(dead_parent[0]) is None  # its dependant dead-letters
            seen[name] = {
                "cancel_finished": masked(await door.act("cancel", done), done),
                "cancel_unknown": masked(await door.act("cancel", UNKNOWN)),
                "retry_completed": masked(await door.act("retry", done), done),
                "delete_live": masked(await door.act("delete", live[0]), live[0]),
                "retry_dead": await door.act("retry", dead[0]),
                "retried": await door.get(dead[0]),  # a View: its state is compared below
                "delete_done": await door.act("delete", done),
                "deleted": masked(await door.act("delete", done), done),
            }
        tcp_cancel = await doors["tcp"].cancel(done)
        await w.conn.close()
        seen["tcp_cancel_code"] = None if tcp_cancel is None else tcp_cancel.code
        return seen

    seen = run(broker, scenario)
    tcp_code = seen.pop("tcp_cancel_code")
    for by_door in seen.values():
        by_door["retried"] = by_door["retried"].state
    result = same(seen)
    assert tcp_code == 3000  # deleted by then: TCP answers the code alone
    assert result["cancel_finished"] == (3002, "cannot cancel task <id0>: it has already "
                                                "finished (completed)")  # fmt: skip
    assert result["cancel_unknown"] == (3000, f"no task with id {UNKNOWN}")
    assert result["retry_completed"][0] == 3002
    assert "dead_letter" in result["retry_completed"][1]
    assert result["delete_live"][0] == 3002 and "cancel it first" in result["delete_live"][1]
    assert result["retry_dead"] is None
    assert result["retried"] == "pending"
    assert result["delete_done"] is None
    assert result["deleted"] == (3000, "no task with id <id0>")


def test_bulk_actions_by_filter_and_by_ids_answer_alike(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        w = await tcp_worker(broker)
        for name in MANAGING:
            door = doors[name]
            assert isinstance(door, TcpDoor | RestDoor | GrpcDoor)
            q = queue()
            done = await completed_task(doors, w, q, b"x")
            for _ in range(3):
                assert not isinstance(await door.submit({"task_type": "t", "queue": q}), Err)
            by_filter = {"filter": {"queue": q, "state": "pending"}, "limit": 2}
            if name == "grpc":
                by_filter = {"filter": {"queue": q, "state": 1}, "limit": 2}  # PENDING
            first, first_more = await door.bulk("cancel", by_filter)
            second, second_more = await door.bulk("cancel", by_filter)
            by_ids, _ = await door.bulk("cancel", {"ids": [UNKNOWN, done]})
            seen[name] = {
                "first": (first, first_more),
                "second": (second, second_more),
                "by_ids": [(c, m.replace(done, "<done>")) for c, m in by_ids],
            }
        await w.conn.close()
        return seen

    result = same(run(broker, scenario))
    assert result["first"] == ([(0, ""), (0, "")], True)
    assert result["second"] == ([(0, "")], False)
    assert result["by_ids"] == [
        (3000, f"no task with id {UNKNOWN}"),
        (3002, "cannot cancel task <done>: it has already finished (completed)"),
    ]


def test_listing_by_priority_tier_answers_alike(broker: BrokerProcess) -> None:
    async def scenario(doors: dict[str, Door]) -> dict[str, list[str]]:
        q = queue()
        ids = {}
        for priority in (50, 150, 250, 120, 199, 100, 99):
            out = await doors["rest"].submit({"task_type": "t", "queue": q, "priority": priority})
            assert not isinstance(out, Err)
            ids[out[0]] = priority
        return {
            name: [f"{ids[i]}" for i in await doors[name].listing(q, "normal")]
            for name in SUBMITTING
        }

    assert same(run(broker, scenario)) == ["150", "120", "199", "100"]
