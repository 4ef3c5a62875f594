"""One client per door (TCP, REST, WebSocket, gRPC) behind one small interface, so the parity
suite can run the same scenario through each door and compare what a user sees: results,
error codes (and the service's messages), events and their order.

Each adapter speaks its transport directly (raw frames over TCP, httpx, websockets, the
generated gRPC stubs), never the tq client library: it is the door under test, not the client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
import grpc.aio
import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.rawconn import RawConn
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.core.ids import TaskId
from tq.core.model import TaskState
from tq.protocol import (
    Ack,
    ActOnFilter,
    ActOnTasks,
    ActReply,
    CancelTask,
    ClaimTask,
    ListTasks,
    Nack,
    QueryStatus,
    SubmitTask,
    Subscribe,
    TaskOutcome,
    TaskResult,
    TaskSpec,
)
from tq.protocol import TaskEvent as WireEvent

T = 10.0  #: deadline of every call

STATE_NAMES = {v: k.removeprefix("TASK_STATE_").lower() for k, v in pb.TaskState.items()}
TIER_PB = {"low": pb.PRIORITY_TIER_LOW, "normal": pb.PRIORITY_TIER_NORMAL,
           "high": pb.PRIORITY_TIER_HIGH}  # fmt: skip


@dataclass(frozen=True)
class Err:
    """A refusal as a user sees it: the stable code and the message."""

    code: int
    message: str


@dataclass(frozen=True)
class Event:
    task_id: str
    state: str
    attempts: int
    result: bytes | None
    error: str | None


@dataclass(frozen=True)
class View:
    """What every door shows of a task."""

    state: str
    queue: str
    task_type: str
    priority: int
    attempts: int
    result: bytes | None
    error: str | None


class Watcher:
    """Events of one subscription, collected as they arrive."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, ev: Event) -> None:
        self.events.append(ev)
        self.arrived.set()

    async def until(self, count: int, timeout: float = T) -> list[Event]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return list(self.events)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class Door:
    name = "?"

    async def submit(self, spec: dict[str, Any]) -> tuple[str, bool] | Err:
        raise NotImplementedError

    async def get(self, task_id: str) -> View | Err:
        raise NotImplementedError

    async def cancel(self, task_id: str) -> Err | None:
        raise NotImplementedError

    async def listing(self, queue: str, tier: str) -> list[str]:
        raise NotImplementedError

    async def watch(
        self, *, queues: Sequence[str] = (), ids: Sequence[str] = (), until_terminal: bool = False
    ) -> Watcher | Err:
        """A live subscription (its first events may follow), or the refusal."""
        raise NotImplementedError


def _tid(text: str) -> TaskId:
    return TaskId(uuid.UUID(text).bytes)


def _text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


class TcpDoor(Door):
    name = "tcp"

    def __init__(self, conn: RawConn, port: int) -> None:
        self.conn = conn
        self.port = port
        self.watch_conns: list[RawConn] = []

    async def _call(self, msg: Any) -> Any:
        return await self.conn.call(msg, T)

    async def submit(self, spec: dict[str, Any]) -> tuple[str, bool] | Err:
        fields = dict(spec)
        if "payload" in fields:
            fields["payload"] = fields["payload"].encode()
        if "depends_on" in fields:
            fields["depends_on"] = tuple(_tid(d) for d in fields["depends_on"])
        if "id" in fields:
            fields["id"] = _tid(fields["id"])
        reply = await self._call(SubmitTask(request_id=self.conn.rid(), tasks=[TaskSpec(**fields)]))
        if isinstance(reply, Nack):
            return Err(reply.code, reply.message)
        return _text(reply.ids[0]), reply.created[0]

    async def get(self, task_id: str) -> View | Err:
        reply = await self._call(QueryStatus(request_id=self.conn.rid(), task_ids=[_tid(task_id)]))
        info = reply.tasks[0]
        if info is None:
            return Err(3000, "")  # the wire answers nil, with no message
        return View(info.state, info.queue, info.task_type, info.priority, info.attempts,
                    info.result, info.error)  # fmt: skip

    async def cancel(self, task_id: str) -> Err | None:
        reply = await self._call(CancelTask(request_id=self.conn.rid(), task_ids=[_tid(task_id)]))
        return Err(reply.codes[0], "") if reply.codes[0] else None

    async def act(self, action: str, task_id: str) -> Err | None:
        msg = ActOnTasks(request_id=self.conn.rid(), action=action,  # type: ignore[arg-type]
                         task_ids=[_tid(task_id)])  # fmt: skip
        reply = await self._call(msg)
        assert isinstance(reply, ActReply), reply
        (result,) = reply.results
        return Err(result.code, result.message) if result.code else None

    async def bulk(self, action: str, body: dict[str, Any]) -> tuple[list[tuple[int, str]], bool]:
        rid, verb = self.conn.rid(), cast(Any, action)
        if "ids" in body:
            msg: Any = ActOnTasks(request_id=rid, action=verb,
                                  task_ids=[_tid(i) for i in body["ids"]])  # fmt: skip
        else:
            f = dict(body["filter"])
            if "state" in f:
                f["state"] = TaskState(f["state"])
            msg = ActOnFilter(request_id=rid, action=verb, limit=body.get("limit", 1000), **f)
        reply = await self._call(msg)
        assert isinstance(reply, ActReply), reply
        return [(r.code, r.message) for r in reply.results], reply.next_cursor is not None

    async def listing(self, queue: str, tier: str) -> list[str]:
        low, high = {"low": (0, 99), "normal": (100, 199), "high": (200, 255)}[tier]
        msg = ListTasks(request_id=self.conn.rid(), queue=queue, priority_min=low,
                        priority_max=high, limit=1000)  # fmt: skip
        reply = await self._call(msg)
        return [_text(t.id) for t in reply.tasks]

    async def watch(
        self, *, queues: Sequence[str] = (), ids: Sequence[str] = (), until_terminal: bool = False
    ) -> Watcher | Err:
        conn = await RawConn.open(self.port)  # its own connection: only its pump reads it
        self.watch_conns.append(conn)
        msg = Subscribe(request_id=conn.rid(), queues=list(queues), task_ids=[_tid(i) for i in ids],
                        until_terminal=until_terminal)  # fmt: skip
        reply = await conn.call(msg, T)
        if isinstance(reply, Nack):
            return Err(reply.code, reply.message)
        assert isinstance(reply, Ack)
        watcher = Watcher()

        async def pump() -> None:
            while True:
                await conn.more_events(len(watcher.events), timeout=3600)
                for e in conn.events[len(watcher.events) :]:
                    watcher.add(_wire_event(e))

        watcher.task = asyncio.create_task(pump())
        return watcher

    async def close(self) -> None:
        for conn in self.watch_conns:
            await conn.close()


def _wire_event(e: WireEvent) -> Event:
    return Event(_text(e.task_id), e.state, e.attempts, e.result, e.error)


def _rest_err(r: httpx.Response) -> Err:
    body = r.json()["error"]
    return Err(body["code"], body["message"])


def _rest_result(body: dict[str, Any]) -> bytes | None:
    b64 = body.get("result_base64")
    return None if b64 is None else base64.b64decode(b64)


class RestDoor(Door):
    name = "rest"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def submit(self, spec: dict[str, Any]) -> tuple[str, bool] | Err:
        r = await self.http.post("/v1/tasks", json=spec)
        if r.status_code not in (200, 201):
            return _rest_err(r)
        return r.json()["id"], r.json()["created"]

    async def get(self, task_id: str) -> View | Err:
        r = await self.http.get(f"/v1/tasks/{task_id}")
        if r.status_code != 200:
            return _rest_err(r)
        b = r.json()
        return View(b["state"], b["queue"], b["task_type"], b["priority"], b["attempts"],
                    _rest_result(b), b.get("error"))  # fmt: skip

    async def cancel(self, task_id: str) -> Err | None:
        return await self.act("cancel", task_id)

    async def act(self, action: str, task_id: str) -> Err | None:
        if action == "delete":
            r = await self.http.delete(f"/v1/tasks/{task_id}")
        else:
            r = await self.http.post(f"/v1/tasks/{task_id}/{action}")
        return None if r.status_code in (200, 204) else _rest_err(r)

    async def bulk(self, action: str, body: dict[str, Any]) -> tuple[list[tuple[int, str]], bool]:
        r = await self.http.post(f"/v1/tasks/bulk/{action}", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        items = [
            (0, "") if i["ok"] else (i["error"]["code"], i["error"]["message"])
            for i in out["results"]
        ]
        return items, out["truncated"]

    async def listing(self, queue: str, tier: str) -> list[str]:
        r = await self.http.get("/v1/tasks", params={"queue": queue, "priority": tier,
                                                     "limit": 1000})  # fmt: skip
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["tasks"]]


class WsDoor(RestDoor):
    """REST for requests, the WebSocket for events: a browser's view of the broker."""

    name = "ws"

    def __init__(self, http: httpx.AsyncClient, ws_url: str) -> None:
        super().__init__(http)
        self.ws_url = ws_url
        self.sockets: list[ClientConnection] = []

    async def watch(
        self, *, queues: Sequence[str] = (), ids: Sequence[str] = (), until_terminal: bool = False
    ) -> Watcher | Err:
        ws = await connect(self.ws_url)
        self.sockets.append(ws)
        await ws.send(json.dumps({"op": "subscribe", "queues": list(queues),
                                  "task_ids": list(ids)}))  # fmt: skip
        first = json.loads(await asyncio.wait_for(ws.recv(), T))
        if first["type"] == "error":
            return Err(first["error"]["code"], first["error"]["message"])
        assert first["type"] == "subscribed", first
        watcher = Watcher()

        async def pump() -> None:
            async for raw in ws:
                m = json.loads(raw)
                if m["type"] == "task":
                    watcher.add(Event(m["task_id"], m["state"], m["attempts"], _rest_result(m),
                                      m.get("error")))  # fmt: skip

        watcher.task = asyncio.create_task(pump())
        return watcher

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()


def grpc_err(e: grpc.aio.AioRpcError) -> Err:
    codes = [v for k, v in e.trailing_metadata() or () if k == "tq-error-code"]
    assert len(codes) == 1, (e.code(), e.details())
    return Err(int(codes[0]), e.details() or "")


class GrpcDoor(Door):
    name = "grpc"

    def __init__(self, stub: TaskQueueStub) -> None:
        self.stub = stub

    async def submit(self, spec: dict[str, Any]) -> tuple[str, bool] | Err:
        fields = dict(spec)
        if "payload" in fields:
            fields["payload"] = fields["payload"].encode()
        try:
            reply = await cast(Any, self.stub.SubmitTask(
                pb.SubmitTaskRequest(task=pb.TaskSpec(**fields)), timeout=T))  # fmt: skip
        except grpc.aio.AioRpcError as e:
            return grpc_err(e)
        return reply.id, reply.created

    async def get(self, task_id: str) -> View | Err:
        try:
            t = await cast(Any, self.stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=T))
        except grpc.aio.AioRpcError as e:
            return grpc_err(e)
        return View(STATE_NAMES[t.state], t.queue, t.task_type, t.priority, t.attempts,
                    t.result if t.HasField("result") else None,
                    t.error if t.HasField("error") else None)  # fmt: skip

    async def cancel(self, task_id: str) -> Err | None:
        return await self.act("cancel", task_id)

    async def act(self, action: str, task_id: str) -> Err | None:
        rpc: Any = {"cancel": self.stub.CancelTask, "retry": self.stub.RetryTask,
                    "delete": self.stub.DeleteTask}[action]  # fmt: skip
        try:
            await cast(Any, rpc(pb.TaskRequest(id=task_id), timeout=T))
        except grpc.aio.AioRpcError as e:
            return grpc_err(e)
        return None

    async def bulk(self, action: str, body: dict[str, Any]) -> tuple[list[tuple[int, str]], bool]:
        rpc: Any = {"cancel": self.stub.CancelTasks, "retry": self.stub.RetryTasks,
                    "delete": self.stub.DeleteTasks}[action]  # fmt: skip
        f = body.get("filter", {})
        req = pb.BulkRequest(ids=body.get("ids", []), limit=body.get("limit", 0),
                             filter=pb.TaskFilter(**f) if f else None)  # fmt: skip
        out = await cast(Any, rpc(req, timeout=T))
        return [(i.code, i.message) for i in out.results], out.truncated

    async def listing(self, queue: str, tier: str) -> list[str]:
        f = pb.TaskFilter(queue=queue, priority_tier=TIER_PB[tier])
        out = await cast(Any, self.stub.ListTasks(pb.ListTasksRequest(filter=f, limit=1000),
                                                  timeout=T))  # fmt: skip
        return [t.id for t in out.tasks]

    async def watch(
        self, *, queues: Sequence[str] = (), ids: Sequence[str] = (), until_terminal: bool = False
    ) -> Watcher | Err:
        call = cast(Any, self.stub.WatchTasks(
            pb.WatchTasksRequest(queues=list(queues), ids=list(ids),
                                 until_terminal=until_terminal), timeout=120))  # fmt: skip
        watcher = Watcher()
        try:
            await call.initial_metadata()  # headers: the subscription is in place
        except grpc.aio.AioRpcError as e:
            return grpc_err(e)
        if call.done() and await call.code() != grpc.StatusCode.OK:  # refused
            codes = [v for k, v in await call.trailing_metadata() or () if k == "tq-error-code"]
            return Err(int(codes[0]), await call.details() or "")

        async def pump() -> None:
            async for message in call:
                for e in message.events:
                    watcher.add(Event(e.id, STATE_NAMES[e.state], e.attempts,
                                      e.result if e.HasField("result") else None,
                                      e.error if e.HasField("error") else None))  # fmt: skip

        watcher.task = asyncio.create_task(pump())
        return watcher


class Worker:
    """Claims and reports over TCP: what moves a task along while the doors watch."""

    def __init__(self, conn: RawConn, name: str) -> None:
        self.conn = conn
        self.name = name

    async def claim(self, queue: str) -> tuple[str, int]:
        msg = ClaimTask(request_id=self.conn.rid(), worker_id=self.name, queues=[queue],
                        max_tasks=1, wait_ms=5000)  # fmt: skip
        reply = await self.conn.call(msg, T)
        (task,) = reply.tasks
        return _text(task.id), task.lease_token

    async def finish(self, task_id: str, token: int, *, result: bytes | None = None,
                     error: str | None = None) -> None:  # fmt: skip
        outcome = TaskOutcome(task_id=_tid(task_id), lease_token=token, ok=error is None,
                              result=result, error=error, retry=False)  # fmt: skip
        reply = await self.conn.call(TaskResult(request_id=self.conn.rid(), results=[outcome]))
        assert list(reply.codes) == [0]


@contextlib.asynccontextmanager
async def open_doors(ports: dict[str, int]) -> AsyncIterator[dict[str, Door]]:
    """A client of every door of one broker, by door name."""
    tcp = TcpDoor(await RawConn.open(ports["port"]), ports["port"])
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['rest_port']}", timeout=T)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc_port']}")
    ws = WsDoor(http, f"ws://127.0.0.1:{ports['rest_port']}/ws")
    try:
        yield {
            "tcp": tcp,
            "rest": RestDoor(http),
            "ws": ws,
            "grpc": GrpcDoor(TaskQueueStub(cast(grpc.Channel, channel))),
        }
    finally:
        await ws.close()
        await channel.close()
        await http.aclose()
        await tcp.close()
        await tcp.conn.close()
