"""WebSocket /ws against a real broker process: subscriptions (all, by queue, by task id),
unsubscribe, periodic stats, bad control messages, and the end-to-end path: a task submitted
over REST, run by a real ``tq worker``, whose completion arrives on the socket."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.cli_procs import worker
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(90)

SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    "monitoring.prometheus_enabled": False,
}
Message = dict[str, Any]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("ws") / "data", settings=SETTINGS) as b:
        yield b


@pytest.fixture
def port(broker: BrokerProcess) -> int:
    return broker.ports["rest_port"]


def run(test: Coroutine[Any, Any, None], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(test, timeout))


def open_ws(port: int) -> connect:
    return connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=10)


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection, timeout: float = 10) -> Message:
    message: Message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def recv_until(
    ws: ClientConnection, match: Callable[[Message], bool], timeout: float = 15
) -> tuple[Message, list[Message]]:
    """The first message that matches, and every message before it."""
    seen: list[Message] = []
    async with asyncio.timeout(timeout):
        while not match(message := await recv(ws, timeout)):
            seen.append(message)
    return message, seen


async def no_events_pending(ws: ClientConnection) -> list[Message]:
    """Messages queued before a ping's pong: events are pushed before REST answers, so this
    sees every event of every request already answered."""
    await send(ws, op="ping")
    _, before = await recv_until(ws, lambda m: m["type"] == "pong")
    return before


def submit(port: int, **task: Any) -> str:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/tasks", json={"task_type": "t", **task})
    assert r.status_code == 201, r.text
    task_id: str = r.json()["id"]
    return task_id


def test_subscribing_to_all_gets_every_event_after_durability(port: int) -> None:
    async def scenario() -> None:
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", all=True)
            ack = await recv(ws)
            assert ack == {
                "type": "subscribed", "task_ids": [], "queues": [], "all": True,
            }  # fmt: skip
            task_id = await asyncio.to_thread(submit, port, queue="everything")
            event, _ = await recv_until(ws, lambda m: m.get("task_id") == task_id)
            assert event["type"] == "task"
            assert event["state"] == "pending"
            assert event["queue"] == "everything"
            assert event["task_type"] == "t"
            assert event["attempts"] == 0
            assert isinstance(event["at"], float)

    run(scenario())


def test_a_queue_subscription_sees_only_its_queue(port: int) -> None:
    mine, other = f"mine-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", queues=[mine])
            assert (await recv(ws))["queues"] == [mine]
            await asyncio.to_thread(submit, port, queue=other)
            task_id = await asyncio.to_thread(submit, port, queue=mine)
            events = await no_events_pending(ws)
            assert [(e["task_id"], e["queue"]) for e in events] == [(task_id, mine)]
            await send(ws, op="unsubscribe", queues=[mine])
            ack = await recv(ws)
            assert (ack["type"], ack["queues"], ack["all"]) == ("unsubscribed", [], False)
            await asyncio.to_thread(submit, port, queue=mine)
            assert await no_events_pending(ws) == []

    run(scenario())


def test_a_task_subscription_follows_one_task_and_refuses_unknown_ids(port: int) -> None:
    async def scenario() -> None:
        task_id = await asyncio.to_thread(submit, port, delay=3600)
        await asyncio.to_thread(submit, port)  # an unrelated task
        unknown = str(uuid.uuid4())
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", task_ids=[task_id, unknown])
            refused = await recv(ws)
            assert refused["type"] == "error"
            assert refused["error"]["code"] == 3000
            assert unknown in refused["error"]["message"]
            await send(ws, op="subscribe", task_ids=[task_id])
            ack = await recv(ws)
            assert ack["task_ids"] == [task_id]  # the refused op changed nothing
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.post(f"/v1/tasks/{task_id}/cancel")).status_code == 200
            events = await no_events_pending(ws)
            assert [(e["task_id"], e["state"]) for e in events] == [(task_id, "cancelled")]

    run(scenario())


def test_a_socket_follows_no_more_than_the_broker_s_caps(port: int) -> None:
    async def scenario() -> None:
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", queues=[f"a{i}" for i in range(600)])
            assert len((await recv(ws))["queues"]) == 600
            # 1,200 queues in all: past broker.max_watched_queues (1,000), the service's cap.
            await send(ws, op="subscribe", queues=[f"b{i}" for i in range(600)])
            refused = await recv(ws)
            assert refused["type"] == "error"
            assert refused["error"]["code"] == 2000
            assert "broker.max_watched_queues" in refused["error"]["message"]
            await send(ws, op="unsubscribe", queues=["a0"])
            after = await recv(ws)
            assert (after["type"], len(after["queues"])) == ("unsubscribed", 599)  # unchanged

    run(scenario())


def test_subscribing_to_a_finished_task_pushes_its_final_state_at_once(port: int) -> None:
    async def scenario() -> None:
        task_id = await asyncio.to_thread(submit, port, delay=3600)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.post(f"/v1/tasks/{task_id}/cancel")
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", task_ids=[task_id])
            assert (await recv(ws))["type"] == "subscribed"
            final = await recv(ws)
            assert (final["type"], final["task_id"], final["state"]) == (
                "task", task_id, "cancelled",
            )  # fmt: skip

    run(scenario())


def test_stats_arrive_periodically_until_stopped(port: int) -> None:
    async def scenario() -> None:
        async with open_ws(port) as ws:
            await send(ws, op="stats", interval=0.1)
            first = await recv(ws)
            second = await recv(ws)
            assert first["type"] == second["type"] == "stats"
            assert second["at"] > first["at"]
            assert {"pending", "in_progress", "queues", "totals", "node_id"} <= set(first)
            await send(ws, op="stats", interval=0)
            await no_events_pending(ws)  # a tick may have been queued before the stop
            assert await no_events_pending(ws) == []

    run(scenario())


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ("not json", "Invalid JSON"),
        ('{"op": "dance"}', "dance"),
        ('{"op": "subscribe", "task_ids": ["nope"]}', "task_ids"),
        ('{"op": "subscribe", "all": "yes please"}', "all"),
        ('{"op": "stats", "interval": -1}', "interval"),
        ('{"op": "subscribe", "extra": 1}', "extra"),
    ],
)
def test_a_bad_control_message_gets_an_error_and_the_socket_stays_open(
    port: int, raw: str, expect: str
) -> None:
    async def scenario() -> None:
        async with open_ws(port) as ws:
            await ws.send(raw)
            reply = await recv(ws)
            assert reply["type"] == "error"
            assert reply["error"]["name"] == "INVALID_ARGUMENT"
            assert reply["error"]["code"] == 2000
            assert expect in reply["error"]["message"]
            assert await no_events_pending(ws) == []

    run(scenario())


def test_a_task_submitted_over_rest_runs_on_a_worker_and_completes_on_the_socket(
    broker: BrokerProcess, port: int, tmp_path: Path
) -> None:
    name = f"rest-e2e-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        async with open_ws(port) as ws:
            await send(ws, op="subscribe", queues=["default"])
            await recv(ws)
            task_id = await asyncio.to_thread(submit, port, task_type="echo", payload="hello")
            done, before = await recv_until(
                ws, lambda m: m.get("task_id") == task_id and m["state"] == "completed", 60
            )
            assert done["result"] == "hello"
            assert base64.b64decode(done["result_base64"]) == b"hello"
            assert done["attempts"] == 1
            states = [m["state"] for m in before if m.get("task_id") == task_id]
            assert states[0] == "pending"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                task = (await http.get(f"/v1/tasks/{task_id}")).json()
            assert (task["state"], task["result"]) == ("completed", "hello")

    with worker(broker.url, "tq.worker.examples", name, tmp_path / "worker.log"):
        run(scenario(), timeout=75)
