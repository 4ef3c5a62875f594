"""Who may use flow control, over REST and gRPC with auth on: a read key lists limits but may
not pause or set them; an admin key of one queue pauses and caps that queue only, and may not
limit a task type (a type spans every queue); an admin key of every queue may do it all. A
refusal changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import pytest

from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(120)

ADMIN = new_api_key()
SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.grpc_enabled": True, "monitoring.prometheus_enabled": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("flow-access") / "d"
    with BrokerProcess(data, settings=SETTINGS, api_key=ADMIN) as b:
        yield b


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_each_key_may_do_exactly_what_its_permission_and_queues_allow(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        base = f"http://127.0.0.1:{broker.ports['rest_port']}"
        async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN), timeout=60) as admin:

            async def key(permissions: list[str], **fields: Any) -> str:
                body = {"name": "k", "permissions": permissions, **fields}
                r = await admin.post("/v1/keys", json=body)
                assert r.status_code == 201, r.text
                return str(r.json()["secret"])

            reader, scoped = await key(["read"]), await key(["admin"], queues=["mine"])

            async def rest(secret: str, method: str, path: str, body: Any = None) -> int:
                r = await admin.request(method, path, json=body, headers=bearer(secret))
                return r.status_code

            assert await rest(reader, "GET", "/v1/limits") == 200
            assert await rest(reader, "POST", "/v1/queues/mine/pause") == 403
            assert await rest(reader, "PUT", "/v1/limits/queues/mine", {"concurrency": 1}) == 403
            assert await rest(scoped, "POST", "/v1/queues/theirs/pause") == 403
            assert await rest(scoped, "PUT", "/v1/limits/types/t", {"concurrency": 1}) == 403
            assert await rest(scoped, "DELETE", "/v1/limits/types/t") == 403
            # Nothing the refusals touched changed.
            assert (await admin.get("/v1/limits")).json() == {"limits": []}
            assert "theirs" not in (await admin.get("/v1/stats")).json()["queues"]

            assert await rest(scoped, "POST", "/v1/queues/mine/pause") == 200
            assert await rest(scoped, "PUT", "/v1/limits/queues/mine", {"concurrency": 2}) == 200
            assert await rest(ADMIN, "PUT", "/v1/limits/types/t", {"rate": 1}) == 200
            # A key of one queue sees its queue's limits and every type's.
            r = await admin.get("/v1/limits", headers=bearer(scoped))
            assert [(x["scope"], x["name"]) for x in r.json()["limits"]] == [
                ("queue", "mine"), ("type", "t"),
            ]  # fmt: skip
            await admin.put("/v1/limits/queues/other", json={"concurrency": 3})
            r = await admin.get("/v1/limits", headers=bearer(scoped))
            assert ("queue", "other") not in [(x["scope"], x["name"]) for x in r.json()["limits"]]

            async with grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
                stub: Any = TaskQueueStub(cast(grpc.Channel, ch))
                req = pb.SetLimitRequest(scope=pb.LIMIT_SCOPE_TYPE, name="t2", concurrency=1)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.SetLimit(req, metadata=(("x-api-key", scoped),), timeout=10)
                assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.PauseQueue(pb.QueueRequest(queue="mine"), timeout=10)
                assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
                state = await stub.ResumeQueue(
                    pb.QueueRequest(queue="mine"), metadata=(("x-api-key", scoped),), timeout=10
                )
                assert not state.paused

    asyncio.run(main())
