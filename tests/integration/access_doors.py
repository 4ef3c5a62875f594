"""Every operation of every door, called as one principal (an API key, or none), reduced to
one outcome: 0 when done as asked, else the stable error code the door answered with (a
WebSocket closed with 4401 counts as UNAUTHENTICATED). The access matrix drives these.

Each door speaks its own transport (raw frames, httpx, websockets, generated gRPC stubs);
what an operation needs (a pending task, a dead-lettered one, a key to revoke) is made first
by the admin (``Setup``), so a permitted call has something to succeed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import grpc.aio
import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.rawconn import RawConn
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.core.ids import TaskId
from tq.protocol import (
    CancelTask,
    ClaimTask,
    ClientConnection,
    GetClusterStatus,
    GetStats,
    KeyCreate,
    KeyList,
    KeyRevoke,
    ListTasks,
    ListWorkers,
    Nack,
    QueryStatus,
    RegisterWorker,
    SubmitTask,
    Subscribe,
    TaskOutcome,
    TaskResult,
    TaskSpec,
    WorkerControl,
    WorkerInspect,
)
from tq.protocol.records import KeySpec

T = 10.0
UNAUTHENTICATED = 5000
PERMISSION_DENIED = 5001
WS_UNAUTHENTICATED = 4401


@dataclass(frozen=True)
class Op:
    """An operation: the permission it needs, whether a key limited to another queue may
    still make it (it names no queue: answered narrowed), its doors, what it acts on."""

    name: str
    permission: str
    scoped_ok: bool
    doors: tuple[str, ...]
    target: str | None = None  # "task", "dead", "done", "key", "worker": made by Setup first


OPS = (
    Op("submit", "submit", False, ("tcp", "rest", "grpc")),
    Op("get", "read", False, ("tcp", "rest", "grpc"), "task"),
    Op("list", "read", False, ("tcp", "rest", "grpc")),
    Op("stats", "read", True, ("tcp", "rest", "grpc", "ws")),
    Op("workers", "read", True, ("tcp", "rest", "grpc")),
    Op("cluster", "read", True, ("tcp", "rest", "grpc")),
    Op("queues", "read", True, ("rest", "grpc")),
    Op("watch", "read", False, ("tcp", "ws", "grpc")),
    Op("scrape", "read", False, ("metrics",)),  # metrics show every queue
    Op("register", "work", False, ("tcp",)),
    Op("claim", "work", False, ("tcp",), "task"),
    Op("cancel", "admin", False, ("tcp", "rest", "grpc"), "task"),
    Op("retry", "admin", False, ("rest", "grpc"), "dead"),
    Op("delete", "admin", False, ("rest", "grpc"), "done"),
    Op("bulk_cancel", "admin", False, ("rest", "grpc"), "task"),
    Op("list_keys", "admin", False, ("tcp", "rest", "grpc")),
    Op("create_key", "admin", False, ("tcp", "rest", "grpc")),
    Op("revoke_key", "admin", False, ("tcp", "rest", "grpc"), "key"),
    Op("inspect_worker", "read", False, ("tcp", "rest", "grpc"), "worker"),
    Op("order_worker", "admin", False, ("tcp", "rest", "grpc"), "worker"),
)


def bearer(secret: str | None) -> dict[str, str]:
    return {} if secret is None else {"Authorization": f"Bearer {secret}"}


def _tid(text: str) -> TaskId:
    return TaskId(uuid.UUID(text).bytes)


def rest_outcome(r: httpx.Response) -> int:
    if r.is_success:
        return 0
    code: int = r.json()["error"]["code"]
    return code


def grpc_outcome(e: grpc.aio.AioRpcError) -> int:
    codes = [v for k, v in e.trailing_metadata() or () if k == "tq-error-code"]
    assert codes, (e.code(), e.details())
    return int(codes[0])


async def open_tcp(port: int, secret: str | None) -> tuple[RawConn, int]:
    """A connection whose HELLO carries ``secret``; (conn, 0) or (conn, the HELLO's NACK)."""
    conn = await RawConn.open(port, hello=False)
    conn.cc = ClientConnection(client_name="access", api_key=secret)
    conn.writer.write(conn.cc.hello())
    try:
        async with asyncio.timeout(T):
            await conn._read_until(lambda: conn.cc.welcome is not None or conn.replies)
    except ConnectionError:
        pass  # refused: the NACK came before the close
    nacks = [r for r in conn.replies.values() if isinstance(r, Nack)]
    if conn.cc.welcome is None:
        assert nacks, "HELLO neither welcomed nor refused"
        return conn, nacks[0].code
    return conn, 0


class Setup:
    """The admin's hands: what operations act on, and the state they must not change."""

    def __init__(self, ports: dict[str, int], admin: str, queue: str) -> None:
        self.ports = ports
        self.admin = admin
        self.queue = queue
        self.dead_queue = f"{queue}-dead"
        #: The worker inspected and ordered (orders after the first change nothing: idempotent).
        self.worker_id: str | None = None
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['rest_port']}", headers=bearer(admin), timeout=T
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, **fields: Any) -> str:
        r = await self.http.post(
            "/v1/tasks", json={"task_type": "t", "queue": self.queue, **fields}
        )
        assert r.status_code == 201, r.text
        task_id: str = r.json()["id"]
        return task_id

    async def key(self, name: str, permissions: list[str], **fields: Any) -> dict[str, Any]:
        r = await self.http.post(
            "/v1/keys", json={"name": name, "permissions": permissions, **fields}
        )
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    async def target(self, kind: str | None) -> str | None:
        if kind is None:
            return None
        if kind == "key":
            return str((await self.key("doomed", ["read"]))["key"]["id"])
        if kind == "task":
            return await self.submit()
        if kind == "worker":  # one, registered once, serving the queue (it never claims)
            if self.worker_id is None:
                wid = f"w-{uuid.uuid4().hex[:8]}"
                conn, refused = await open_tcp(self.ports["port"], self.admin)
                assert refused == 0
                try:
                    register = RegisterWorker(
                        request_id=conn.rid(), worker_id=wid, queues=[self.queue]
                    )
                    assert not isinstance(await conn.call(register, T), Nack)
                finally:
                    await conn.close()
                self.worker_id = wid
            return self.worker_id
        if kind == "done":
            task_id = await self.submit(delay=3600)
            r = await self.http.post(f"/v1/tasks/{task_id}/cancel")
            assert r.status_code == 200, r.text
            return task_id
        assert kind == "dead"
        # In a queue of its own, where the only other tasks are those an admin retried.
        task_id = await self.submit(max_retries=0, queue=self.dead_queue)
        conn, refused = await open_tcp(self.ports["port"], self.admin)
        assert refused == 0
        try:
            claim = ClaimTask(request_id=conn.rid(), worker_id="setup", queues=[self.dead_queue],
                              max_tasks=1000, wait_ms=5000)  # fmt: skip
            reply = await conn.call(claim, T)
            assert task_id in [str(uuid.UUID(bytes=t.id)) for t in reply.tasks]
            outcomes = [
                TaskOutcome(task_id=t.id, lease_token=t.lease_token, retry=False,
                            ok=str(uuid.UUID(bytes=t.id)) != task_id, error="boom")
                for t in reply.tasks
            ]  # fmt: skip
            done = await conn.call(TaskResult(request_id=conn.rid(), results=outcomes), T)
            assert set(done.codes) == {0}, done
        finally:
            await conn.close()
        return task_id

    async def snapshot(self) -> tuple[object, ...]:
        """Every task of the queue with its state, every key with its revocation, every
        worker: what a refused call must leave as it was."""
        tasks: list[tuple[str, str]] = []
        for queue in (self.queue, self.dead_queue):
            params: dict[str, Any] = {"queue": queue, "limit": 1000}
            while True:
                page = await self.http.get("/v1/tasks", params=params)
                assert page.status_code == 200, page.text
                tasks += [(t["id"], t["state"]) for t in page.json()["tasks"]]
                if page.json()["next_cursor"] is None:
                    break
                params["cursor"] = page.json()["next_cursor"]
        keys = await self.http.get("/v1/keys")
        workers = await self.http.get("/v1/workers")
        assert keys.status_code == workers.status_code == 200
        return (
            sorted(tasks),
            sorted((k["id"], k["revoked_at"]) for k in keys.json()["keys"]),
            sorted(w["id"] for w in workers.json()["workers"]),
        )


Call = Callable[[str, str | None], Awaitable[int]]


class Doors:
    """Every door, as one principal: ``await doors.call(door, op, target)``."""

    def __init__(self, ports: dict[str, int], secret: str | None, queue: str) -> None:
        self.ports = ports
        self.secret = secret
        self.queue = queue
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['rest_port']}", headers=bearer(secret), timeout=T
        )
        metadata = () if secret is None else (("authorization", f"Bearer {secret}"),)
        self.metadata = tuple(metadata)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc_port']}")
        self.stub = TaskQueueStub(cast(grpc.Channel, self.channel))
        self.tcp: tuple[RawConn, int] | None = None

    async def close(self) -> None:
        await self.http.aclose()
        await self.channel.close()
        if self.tcp is not None:
            await self.tcp[0].close()

    async def call(self, door: str, op: str, target: str | None) -> int:
        method: Call = getattr(self, f"{door}_{op}")
        return await method(op, target)

    # ------------------------------------------------------------------ TCP

    async def _tcp(self, msg_of: Callable[[RawConn], Any]) -> int:
        if self.tcp is None:
            self.tcp = await open_tcp(self.ports["port"], self.secret)
        conn, refused = self.tcp
        if refused:
            return refused
        reply = await conn.call(msg_of(conn), T)
        return reply.code if isinstance(reply, Nack) else 0

    async def tcp_submit(self, op: str, target: str | None) -> int:
        spec = TaskSpec(task_type="t", queue=self.queue)
        return await self._tcp(lambda c: SubmitTask(request_id=c.rid(), tasks=[spec]))

    async def tcp_get(self, op: str, target: str | None) -> int:
        assert target is not None
        return await self._tcp(lambda c: QueryStatus(request_id=c.rid(), task_ids=[_tid(target)]))

    async def tcp_list(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: ListTasks(request_id=c.rid(), queue=self.queue))

    async def tcp_stats(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: GetStats(request_id=c.rid()))

    async def tcp_cluster(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: GetClusterStatus(request_id=c.rid()))

    async def tcp_workers(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: ListWorkers(request_id=c.rid()))

    async def tcp_watch(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: Subscribe(request_id=c.rid(), queues=[self.queue]))

    async def tcp_register(self, op: str, target: str | None) -> int:
        wid = f"w-{uuid.uuid4().hex[:8]}"
        return await self._tcp(
            lambda c: RegisterWorker(request_id=c.rid(), worker_id=wid, queues=[self.queue])
        )

    async def tcp_inspect_worker(self, op: str, target: str | None) -> int:
        assert target is not None
        return await self._tcp(lambda c: WorkerInspect(request_id=c.rid(), worker_id=target))

    async def tcp_order_worker(self, op: str, target: str | None) -> int:
        assert target is not None
        return await self._tcp(
            lambda c: WorkerControl(
                request_id=c.rid(), worker_id=target, action="consume", queue=self.queue + "-x"
            )
        )

    async def tcp_claim(self, op: str, target: str | None) -> int:
        return await self._tcp(
            lambda c: ClaimTask(
                request_id=c.rid(), worker_id="w", queues=[self.queue], max_tasks=1000
            )
        )

    async def tcp_cancel(self, op: str, target: str | None) -> int:
        assert target is not None
        return await self._tcp(lambda c: CancelTask(request_id=c.rid(), task_ids=[_tid(target)]))

    async def tcp_list_keys(self, op: str, target: str | None) -> int:
        return await self._tcp(lambda c: KeyList(request_id=c.rid()))

    async def tcp_create_key(self, op: str, target: str | None) -> int:
        spec = KeySpec(name="made", permissions=["read"])
        return await self._tcp(lambda c: KeyCreate(request_id=c.rid(), key=spec))

    async def tcp_revoke_key(self, op: str, target: str | None) -> int:
        assert target is not None
        return await self._tcp(lambda c: KeyRevoke(request_id=c.rid(), key_id=target))

    # ------------------------------------------------------------------ REST

    async def rest_submit(self, op: str, target: str | None) -> int:
        return rest_outcome(
            await self.http.post("/v1/tasks", json={"task_type": "t", "queue": self.queue})
        )

    async def rest_get(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get(f"/v1/tasks/{target}"))

    async def rest_list(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/tasks", params={"queue": self.queue}))

    async def rest_stats(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/stats"))

    async def rest_cluster(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/cluster"))

    async def rest_workers(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/workers"))

    async def rest_queues(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/queues"))

    async def rest_cancel(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.post(f"/v1/tasks/{target}/cancel"))

    async def rest_retry(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.post(f"/v1/tasks/{target}/retry"))

    async def rest_delete(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.delete(f"/v1/tasks/{target}"))

    async def rest_bulk_cancel(self, op: str, target: str | None) -> int:
        r = await self.http.post("/v1/tasks/bulk/cancel", json={"ids": [target]})
        if r.is_success:
            assert r.json()["succeeded"] == 1, r.text
        return rest_outcome(r)

    async def rest_list_keys(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get("/v1/keys"))

    async def rest_create_key(self, op: str, target: str | None) -> int:
        body = {"name": "made", "permissions": ["read"]}
        return rest_outcome(await self.http.post("/v1/keys", json=body))

    async def rest_inspect_worker(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.get(f"/v1/workers/{target}"))

    async def rest_order_worker(self, op: str, target: str | None) -> int:
        body = {"queue": self.queue + "-x"}
        return rest_outcome(await self.http.post(f"/v1/workers/{target}/consume", json=body))

    async def rest_revoke_key(self, op: str, target: str | None) -> int:
        return rest_outcome(await self.http.delete(f"/v1/keys/{target}"))

    # ------------------------------------------------------------------ gRPC

    async def _grpc(self, rpc: Any, request: Any) -> int:
        try:
            await rpc(request, metadata=self.metadata, timeout=T)
        except grpc.aio.AioRpcError as e:
            return grpc_outcome(e)
        return 0

    async def grpc_submit(self, op: str, target: str | None) -> int:
        spec = pb.TaskSpec(task_type="t", queue=self.queue)
        return await self._grpc(self.stub.SubmitTask, pb.SubmitTaskRequest(task=spec))

    async def grpc_get(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.GetTask, pb.GetTaskRequest(id=target))

    async def grpc_list(self, op: str, target: str | None) -> int:
        req = pb.ListTasksRequest(filter=pb.TaskFilter(queue=self.queue))
        return await self._grpc(self.stub.ListTasks, req)

    async def grpc_stats(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.GetStats, pb.GetStatsRequest())

    async def grpc_cluster(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.GetClusterStatus, pb.GetClusterStatusRequest())

    async def grpc_workers(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.ListWorkers, pb.ListWorkersRequest())

    async def grpc_queues(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.ListQueues, pb.ListQueuesRequest())

    async def grpc_cancel(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.CancelTask, pb.TaskRequest(id=target))

    async def grpc_retry(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.RetryTask, pb.TaskRequest(id=target))

    async def grpc_delete(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.DeleteTask, pb.TaskRequest(id=target))

    async def grpc_bulk_cancel(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.CancelTasks, pb.BulkRequest(ids=[target or ""]))

    async def grpc_list_keys(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.ListKeys, pb.ListKeysRequest())

    async def grpc_create_key(self, op: str, target: str | None) -> int:
        req = pb.CreateKeyRequest(name="made", permissions=["read"])
        return await self._grpc(self.stub.CreateKey, req)

    async def grpc_inspect_worker(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.InspectWorker, pb.WorkerRequest(id=target))

    async def grpc_order_worker(self, op: str, target: str | None) -> int:
        req = pb.WorkerQueueRequest(id=target, queue=self.queue + "-x")
        return await self._grpc(self.stub.ConsumeQueue, req)

    async def grpc_revoke_key(self, op: str, target: str | None) -> int:
        return await self._grpc(self.stub.RevokeKey, pb.RevokeKeyRequest(id=target))

    async def grpc_watch(self, op: str, target: str | None) -> int:
        call: Any = self.stub.WatchTasks(
            pb.WatchTasksRequest(queues=[self.queue]), metadata=self.metadata, timeout=T
        )
        try:
            await call.initial_metadata()
            if call.done():
                code = await call.code()
                if code != grpc.StatusCode.OK:
                    trailers = await call.trailing_metadata() or ()
                    return int(next(v for k, v in trailers if k == "tq-error-code"))
            return 0
        except grpc.aio.AioRpcError as e:
            return grpc_outcome(e)
        finally:
            call.cancel()

    # ------------------------------------------------------------------ WebSocket

    async def _ws(self, first: dict[str, Any], *, header: bool) -> int:
        """Send ``first`` after authenticating by the upgrade header, or else by the auth
        message; the outcome of ``first``."""
        url = f"ws://127.0.0.1:{self.ports['rest_port']}/ws"
        headers = bearer(self.secret) if header else {}
        try:
            async with connect(url, additional_headers=headers, open_timeout=T) as ws:
                if not header and self.secret is not None:
                    await ws.send(json.dumps({"op": "auth", "api_key": self.secret}))
                    answer = json.loads(await asyncio.wait_for(ws.recv(), T))
                    assert answer["type"] == "authenticated", answer
                await ws.send(json.dumps(first))
                reply = json.loads(await asyncio.wait_for(ws.recv(), T))
                if reply["type"] == "error":
                    code: int = reply["error"]["code"]
                    return code
                return 0
        except ConnectionClosed as e:
            closed = e.rcvd
        # Closed by the broker: only an unauthenticated socket is.
        assert closed is not None
        assert closed.code == WS_UNAUTHENTICATED, closed
        return UNAUTHENTICATED

    async def ws_stats(self, op: str, target: str | None) -> int:
        return await self._ws({"op": "stats", "interval": 0.2}, header=True)

    async def ws_watch(self, op: str, target: str | None) -> int:
        return await self._ws({"op": "subscribe", "queues": [self.queue]}, header=False)

    # ------------------------------------------------------------------ metrics

    async def metrics_scrape(self, op: str, target: str | None) -> int:
        url = f"http://127.0.0.1:{self.ports['metrics_port']}/metrics"
        async with httpx.AsyncClient(timeout=T) as http:
            r = await http.get(url, headers=bearer(self.secret))
        if r.status_code == 200:
            return 0
        with contextlib.suppress(KeyError):
            return {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}[r.status_code]
        raise AssertionError(f"metrics answered {r.status_code}: {r.text}")
