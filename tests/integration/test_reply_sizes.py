"""Replies bounded by bytes, against a real broker process (docs/protocol.md, "Reply sizes"):
a client's own smaller frame limit is respected (pages and claims shrink, an oversize status
lookup or submit is refused, an oversize event comes truncated, and nothing above the limit
is ever sent: the test client's decoder refuses it); claims stop at the frame budget; tags are
limited through every door; WebSocket and gRPC streams close a consumer that falls too many
bytes behind.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.doors import Err, open_doors
from tests.integration.rawconn import RawConn
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.client import AsyncClient
from tq.core.ids import TaskId, parse_task_id
from tq.errors import ErrorCode
from tq.protocol import (
    ClaimReply,
    ClaimTask,
    ListReply,
    ListTasks,
    Nack,
    QueryStatus,
    StatusReply,
    SubmitTask,
    Subscribe,
    TaskEvent,
    TaskOutcome,
    TaskSpec,
)
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)

KiB, MiB = 1024, 1024 * 1024
LIMIT = 64 * KiB  #: the small client's frame limit, the least HELLO may state
SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.websocket_enabled": True, "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": False, "broker.max_payload_size_bytes": 4096,
}  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("sizes") / "d") as b:
        yield b


def run(scenario: Callable[[], Awaitable[None]], within: float = 120) -> None:
    async def main() -> None:
        async with asyncio.timeout(within):
            await scenario()

    asyncio.run(main())


def new_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


async def complete(client: AsyncClient, queue: str, results: list[bytes]) -> list[TaskId]:
    """Submit, claim and complete one task per result; their raw ids in order."""
    ids = [parse_task_id(i) for i in await client.submit_many(
        [TaskSpec(task_type="t", queue=queue) for _ in results])]  # fmt: skip
    claimed = await client.claim(f"w-{queue}", [queue], len(results))
    assert [t.id for t in claimed] == ids
    outcomes = [TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True, result=r)
                for t, r in zip(claimed, results, strict=True)]  # fmt: skip
    assert await client.report(outcomes) == [0] * len(results)
    return ids


def test_a_clients_smaller_frame_limit_shrinks_pages_and_is_never_exceeded(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        queue = new_queue()
        async with AsyncClient(broker.url) as client:
            ids = await complete(client, queue, [bytes([65 + i]) * (20 * KiB) for i in range(10)])
        small = await RawConn.open(broker.port, max_frame_size=LIMIT)
        big = await RawConn.open(broker.port)
        try:
            pages: list[list[bytes]] = []
            cursor = None
            while True:
                msg = ListTasks(request_id=small.rid(), queue=queue, cursor=cursor, limit=100)
                reply = await small.call(msg)
                assert isinstance(reply, ListReply), reply
                pages.append([t.id for t in reply.tasks])
                if (cursor := reply.next_cursor) is None:
                    break
            assert [i for page in pages for i in page] == ids
            assert max(len(page) for page in pages) == 3  # 3 x 20 KiB fit in 64 KiB, 4 do not
            whole = await big.call(ListTasks(request_id=big.rid(), queue=queue, limit=100))
            assert [t.id for t in whole.tasks] == ids  # the broker's own limit: one page
        finally:
            await small.close()
            await big.close()

    run(scenario)


def test_status_claims_events_and_submits_stay_within_a_clients_smaller_limit(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        big_q, mid_q, ev_q = new_queue(), new_queue(), new_queue()
        small = await RawConn.open(broker.port, max_frame_size=LIMIT)
        async with AsyncClient(broker.url) as client:
            try:
                # A lookup whose reply would not fit: refused, naming what to do.
                large = await client.submit("t", b"p" * (100 * KiB), queue=big_q)
                tid = parse_task_id(large)
                nack = await small.call(
                    QueryStatus(request_id=small.rid(), task_ids=[tid], include_payload=True)
                )
                assert isinstance(nack, Nack)
                assert nack.code == ErrorCode.REPLY_TOO_LARGE
                assert "without include_payload" in nack.message
                plain = await small.call(QueryStatus(request_id=small.rid(), task_ids=[tid]))
                assert isinstance(plain, StatusReply)
                assert plain.tasks[0] is not None

                # Claims hold what fits; a task that cannot fit waits for another worker.
                claim = ClaimTask(request_id=small.rid(), worker_id="small", queues=[big_q])
                assert (await small.call(claim)).tasks == []
                assert (await client.status(large)).state == "pending"
                await client.submit_many([TaskSpec(task_type="t", queue=mid_q,
                                                   payload=b"m" * (30 * KiB))] * 5)  # fmt: skip
                sizes = []
                for _ in range(3):
                    msg = ClaimTask(request_id=small.rid(), worker_id="small", queues=[mid_q],
                                    max_tasks=5)  # fmt: skip
                    reply = await small.call(msg)
                    assert isinstance(reply, ClaimReply)
                    sizes.append(len(reply.tasks))
                assert sizes == [2, 2, 1]
                (other,) = await client.claim("big-worker", [big_q], 5)
                assert other.id == tid

                # An event too large for the client comes without its result, flagged.
                watched = await client.submit("t", queue=ev_q)
                wid = parse_task_id(watched)
                sub = Subscribe(request_id=small.rid(), task_ids=[wid], until_terminal=True)
                assert not isinstance(await small.call(sub), Nack)
                (task,) = await client.claim("w", [ev_q], 1)
                done = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True,
                                   result=b"r" * (100 * KiB))  # fmt: skip
                assert await client.report([done]) == [0]
                event = await small.wait_event(lambda e: e.task_id == wid)
                assert isinstance(event, TaskEvent)
                assert (event.state, event.truncated, event.result) == ("completed", True, None)
                # The reference client then falls back to a status read, which fits here
                # (its limit is the broker's).
                assert await client.result(watched, timeout=10) == b"r" * (100 * KiB)

                # A submit whose reply would not fit is refused before anything is applied.
                tiny = [TaskSpec(task_type="t", queue=ev_q)] * 4000
                refused = await small.call(SubmitTask(request_id=small.rid(), tasks=tiny))
                assert isinstance(refused, Nack)
                assert refused.code == ErrorCode.REPLY_TOO_LARGE
                assert "at most 3445 tasks" in refused.message
                listed, _ = await client.list_tasks(queue=ev_q)
                assert [t.id for t in listed] == [wid]  # none of the 4000
            finally:
                await small.close()

    run(scenario)


def test_a_claim_stops_at_the_frame_budget(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        queue = new_queue()
        async with AsyncClient(broker.url) as client:
            await client.submit_many(
                [TaskSpec(task_type="t", queue=queue, payload=b"x" * (6 * MiB))] * 3
            )
            first = await client.claim("w", [queue], 3)
            assert len(first) == 2  # 3 x 6 MiB would pass the 16 MiB frame
            assert len(await client.claim("w", [queue], 3)) == 1

    run(scenario)


@pytest.fixture(scope="module")
def doors_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("tags") / "d", settings=SETTINGS) as b:
        yield b


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [
        ({"tags": {f"k{i}": "v" for i in range(65)}}, 2000, "tags"),
        ({"tags": {"k": "v" * 2000}}, 2000, "tags"),
        ({"payload": "p" * 3000, "tags": {"k": "v" * 1000, "l": "w" * 1000}}, 2001, "tags"),
    ],
    ids=["65 tags", "a long value", "tags past the payload limit"],
)
def test_tags_are_limited_through_every_door(
    doors_broker: BrokerProcess, spec: dict[str, Any], code: int, words: str
) -> None:
    async def scenario() -> None:
        async with open_doors(doors_broker.ports) as doors:
            for name in ("tcp", "rest", "grpc"):
                got = await doors[name].submit({"task_type": "t", **spec})
                assert isinstance(got, Err), (name, got)
                assert got.code == code, (name, got)
                assert words in got.message, (name, got)
                ok = await doors[name].submit({"task_type": "t", "tags": {"k": "v"}})
                assert not isinstance(ok, Err), (name, ok)

    run(scenario)


def test_websocket_and_grpc_streams_close_a_consumer_too_many_bytes_behind(
    broker: BrokerProcess,
) -> None:
    """About 300 events (far below the count bounds), 100 of them with 1 MiB results: only
    the 64 MiB byte bounds can end the two streams that read nothing."""
    ports = broker.ports

    async def scenario() -> None:
        queue = new_queue()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", ports["rest_port"]))
        ws = await connect(f"ws://127.0.0.1:{ports['rest_port']}/ws", sock=sock, max_queue=1,
                           proxy=None)  # fmt: skip
        await ws.send(json.dumps({"op": "subscribe", "queues": [queue]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 8 * MiB)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc_port']}",
                                             options=options) as channel:  # fmt: skip
            stub = TaskQueueStub(cast(grpc.Channel, channel))
            stream: Any = stub.WatchTasks(pb.WatchTasksRequest(queues=[queue]))
            await stream.initial_metadata()  # the subscription is in place
            async with AsyncClient(broker.url) as client:
                for _ in range(10):
                    await complete(client, queue, [b"r" * MiB] * 10)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async for _ in stream:
                    pass
            assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "bytes behind" in (ended.value.details() or "")
        closed = await closing(ws)
        if closed.rcvd is not None:  # the close frame may not get through a full socket
            assert closed.rcvd.code == 1013
            assert "bytes" in closed.rcvd.reason

    run(scenario)


async def closing(ws: Any, timeout: float = 60) -> ConnectionClosed:
    """Read until the server closes the socket; how it closed."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await ws.recv()
            except ConnectionClosed as e:
                return e


def test_a_result_above_the_payload_limit_fails_the_task_saying_why(
    doors_broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        queue = new_queue()
        async with AsyncClient(doors_broker.url) as client:
            task_id = await client.submit("t", queue=queue)
            (task,) = await client.claim("w", [queue], 1)
            huge = TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True,
                               result=b"r" * 5000)  # fmt: skip
            assert await client.report([huge]) == [ErrorCode.PAYLOAD_TOO_LARGE]
            info = await client.status(task_id)
            assert (info.state, info.error_type, info.result) == (
                "dead_letter", "ResultTooLarge", None,
            )  # fmt: skip
            assert info.error is not None and "5000 bytes" in info.error
            assert "4096" in info.error

    run(scenario)


def test_a_task_too_large_for_a_page_is_listed_truncated_and_the_listing_goes_on(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        queue = new_queue()
        async with AsyncClient(broker.url) as client:
            ids = await complete(client, queue, [b"s", b"L" * (100 * KiB), b"t"])
        small = await RawConn.open(broker.port, max_frame_size=LIMIT)
        try:
            listed: list[tuple[bytes, bool, bytes | None]] = []
            cursor = None
            while True:
                msg = ListTasks(request_id=small.rid(), queue=queue, cursor=cursor, limit=100)
                reply = await small.call(msg)
                assert isinstance(reply, ListReply), reply
                listed += [(t.id, t.truncated, t.result) for t in reply.tasks]
                if (cursor := reply.next_cursor) is None:
                    break
            assert listed == [(ids[0], False, b"s"), (ids[1], True, None), (ids[2], False, b"t")]
        finally:
            await small.close()
        # Through REST, a record larger than a page (2 MiB) is listed the same way.
        async with AsyncClient(broker.url) as client:
            (big,) = await complete(client, queue, [b"B" * (3 * MiB)])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['rest_port']}",
                                     timeout=30) as http:  # fmt: skip
            seen: dict[str, dict[str, Any]] = {}
            rest_cursor: str | None = None
            while True:
                params: dict[str, Any] = {"queue": queue}
                if rest_cursor is not None:
                    params["cursor"] = rest_cursor
                page = (await http.get("/v1/tasks", params=params)).json()
                seen |= {t["id"]: t for t in page["tasks"]}
                if (rest_cursor := page["next_cursor"]) is None:
                    break
            listed_big = seen[str(uuid.UUID(bytes=big))]
            assert (listed_big["truncated"], listed_big.get("result_base64")) == (True, None)
            assert not seen[str(uuid.UUID(bytes=ids[0]))]["truncated"]
            whole = (await http.get(f"/v1/tasks/{listed_big['id']}")).json()
            assert not whole["truncated"] and len(whole["result"]) == 3 * MiB

    run(scenario)


def test_depends_on_is_bounded_for_every_door(doors_broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with open_doors(doors_broker.ports) as doors:
            many = [str(uuid.uuid4()) for _ in range(1001)]
            for name in ("tcp", "rest", "grpc"):
                refused = await doors[name].submit(
                    {"task_type": "t", "queue": new_queue(), "depends_on": many}
                )
                assert isinstance(refused, Err), name
                assert refused.code == 2000, (name, refused)
                assert "depends_on" in refused.message, (name, refused)

    run(scenario)
