"""API keys on the HTTP doors and gRPC beyond the matrix: the ways a key may be presented,
rate limits answered with when to retry (and honoured: allowed again after it), revocation
and expiry ending open WebSocket and gRPC streams at once, and what stays open (health,
reflection, documents; metrics unless protected).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.access_doors import WS_UNAUTHENTICATED, bearer
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(120)

SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.websocket_enabled": True, "api.grpc_enabled": True,
    "monitoring.prometheus_enabled": True,
}  # fmt: skip
ADMIN = new_api_key()
T = 10.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("access-http") / "d"
    with BrokerProcess(data, settings=SETTINGS, api_key=ADMIN) as b:
        yield b


def rest(broker: BrokerProcess) -> str:
    return f"http://127.0.0.1:{broker.ports['rest_port']}"


def make_key(broker: BrokerProcess, permissions: list[str], **fields: Any) -> dict[str, Any]:
    r = httpx.post(
        rest(broker) + "/v1/keys",
        json={"name": "t", "permissions": permissions, **fields},
        headers=bearer(ADMIN),
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def revoke(broker: BrokerProcess, key_id: str) -> None:
    r = httpx.delete(f"{rest(broker)}/v1/keys/{key_id}", headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"] is not None


# ---------------------------------------------------------------------- presenting a key


def test_rest_takes_the_key_as_bearer_or_x_api_key_and_refuses_another_scheme(
    broker: BrokerProcess,
) -> None:
    url = rest(broker) + "/v1/stats"
    assert httpx.get(url, headers={"Authorization": f"bearer {ADMIN}"}).status_code == 200
    assert httpx.get(url, headers={"X-API-Key": ADMIN}).status_code == 200
    basic = httpx.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    assert basic.headers["WWW-Authenticate"] == "Bearer"
    assert "must be 'Bearer <API key>'" in basic.json()["error"]["message"]
    wrong = ADMIN[:-1] + ("A" if ADMIN[-1] != "A" else "B")
    refused = httpx.get(url, headers=bearer(wrong))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"].startswith("wrong secret for API key")
    assert wrong not in refused.text  # a presented key is never echoed


def test_grpc_takes_the_key_in_x_api_key_and_leaves_health_and_reflection_open(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
            stub = TaskQueueStub(cast(grpc.Channel, ch))
            stats: Any = stub.GetStats
            await stats(pb.GetStatsRequest(), metadata=(("x-api-key", ADMIN),), timeout=T)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stats(pb.GetStatsRequest(), metadata=(("authorization", "Basic x"),))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health: Any = health_pb2_grpc.HealthStub(cast(grpc.Channel, ch))
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=T)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection: Any = reflection_pb2_grpc.ServerReflectionStub(cast(grpc.Channel, ch))
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            answers = [a async for a in reflection.ServerReflectionInfo(iter([ask]), timeout=T)]
            names = {s.name for s in answers[0].list_services_response.service}
            assert "tq.v1.TaskQueue" in names

    asyncio.run(main())


def test_a_websocket_authenticates_by_its_first_message_or_is_closed_with_4401(
    broker: BrokerProcess,
) -> None:
    url = f"ws://127.0.0.1:{broker.ports['rest_port']}/ws"

    async def closed(ws: ClientConnection) -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as gone:
            await asyncio.wait_for(ws.recv(), T)
        assert gone.value.rcvd is not None
        return gone.value.rcvd.code, gone.value.rcvd.reason

    async def main() -> None:
        async with connect(url, additional_headers={"X-API-Key": ADMIN}) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), T)) == {"type": "pong"}
            await ws.send(json.dumps({"op": "auth", "api_key": ADMIN}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert answer["error"]["message"].startswith("this socket is already authenticated")
            await ws.send(json.dumps({"op": "auth", "api_key": "tq_secret" * 40}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert answer["error"]["code"] == 2000
            assert "tq_secret" not in answer["error"]["message"]
        async with connect(url) as ws:
            await ws.send(json.dumps({"op": "auth", "api_key": ADMIN}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert answer == {"type": "authenticated", "key_id": ADMIN[3:15], "name": "bootstrap"}
        async with connect(url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "all": True}))
            code, reason = await closed(ws)
            assert code == WS_UNAUTHENTICATED
            assert reason.startswith('no API key given: send "Authorization: Bearer <key>"')
        async with connect(url) as ws:
            await ws.send(json.dumps({"op": "auth", "api_key": "tq_000000000000_" + "x" * 43}))
            assert await closed(ws) == (WS_UNAUTHENTICATED, "unknown API key id 000000000000")
        async with connect(url) as ws:  # says nothing: closed once the 5 s are up
            t0 = time.monotonic()
            code, reason = await closed(ws)
            assert (code, reason.split(":")[0]) == (WS_UNAUTHENTICATED, "no API key within 5 s")
            assert 4.5 < time.monotonic() - t0 < T

    asyncio.run(main())


# ---------------------------------------------------------------------- rate limits


def test_a_burst_beyond_the_bucket_gets_429_with_retry_after_and_is_allowed_after_it(
    broker: BrokerProcess,
) -> None:
    key = make_key(broker, ["read"], rate_limits={"read": {"rate": 2, "burst": 3}})
    with httpx.Client(base_url=rest(broker), headers=bearer(key["secret"]), timeout=T) as http:
        burst = [http.get("/v1/stats") for _ in range(3)]
        assert [r.status_code for r in burst] == [200, 200, 200]
        refused = http.get("/v1/stats")
        refused_at = time.monotonic()
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == 4002
        assert error["name"] == "RATE_LIMITED"
        assert 0 < error["retry_after"] <= 0.5 + 1e-6  # one token at 2/s
        assert refused.headers["Retry-After"] == "1"  # whole seconds, rounded up
        # A refusal spends nothing: asking again until allowed (bounded) ends about when
        # the broker said it would, not before.
        deadline = refused_at + 5
        while (again := http.get("/v1/stats")).status_code == 429:
            assert time.monotonic() < deadline, again.text
        assert again.status_code == 200
        assert time.monotonic() - refused_at >= error["retry_after"] - 0.05
        # Another permission class of the same key has its own bucket (here: unlimited).
        assert http.get("/v1/keys").status_code == 403


def test_grpc_and_websocket_say_when_to_retry_too(broker: BrokerProcess) -> None:
    key = make_key(broker, ["read"], rate_limits={"read": {"rate": 0.5, "burst": 1}})
    secret = key["secret"]

    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
            stats: Any = TaskQueueStub(cast(grpc.Channel, ch)).GetStats
            metadata = (("authorization", f"Bearer {secret}"),)
            await stats(pb.GetStatsRequest(), metadata=metadata, timeout=T)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stats(pb.GetStatsRequest(), metadata=metadata, timeout=T)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(refused.value.trailing_metadata() or ())
        assert trailers["tq-error-code"] == "4002"
        assert 0 < float(trailers["retry-after"]) <= 2.0
        url = f"ws://127.0.0.1:{broker.ports['rest_port']}/ws"
        async with connect(url, additional_headers=bearer(secret)) as ws:
            await ws.send(json.dumps({"op": "subscribe", "all": True}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), T))
            assert answer["type"] == "error", answer
            assert answer["error"]["code"] == 4002
            assert 0 < answer["error"]["retry_after"] <= 2.0

    asyncio.run(main())


# ---------------------------------------------------------------------- streams end


def test_revoking_a_key_ends_its_open_websocket_and_grpc_streams_at_once(
    broker: BrokerProcess,
) -> None:
    key = make_key(broker, ["read"])
    secret, key_id = key["secret"], key["key"]["id"]
    other = make_key(broker, ["read"])["secret"]  # a stream of another key goes on

    async def main() -> None:
        url = f"ws://127.0.0.1:{broker.ports['rest_port']}/ws"
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch,
            connect(url, additional_headers=bearer(secret)) as ws,
            connect(url, additional_headers=bearer(other)) as bystander,
        ):
            stub = TaskQueueStub(cast(grpc.Channel, ch))
            metadata = (("authorization", f"Bearer {secret}"),)
            watch: Any = stub.WatchTasks(pb.WatchTasksRequest(all=True), metadata=metadata)
            stats: Any = stub.WatchStats(
                pb.WatchStatsRequest(interval_ms=3_600_000), metadata=metadata
            )
            await watch.initial_metadata()
            await stats.read()  # the first stats: the stream is open
            for socket in (ws, bystander):
                await socket.send(json.dumps({"op": "subscribe", "all": True}))
                subscribed = json.loads(await asyncio.wait_for(socket.recv(), T))
                assert subscribed["type"] == "subscribed"
            t0 = time.monotonic()
            await asyncio.to_thread(revoke, broker, key_id)
            with pytest.raises(ConnectionClosed) as gone:
                await asyncio.wait_for(ws.recv(), T)
            assert gone.value.rcvd is not None
            assert gone.value.rcvd.code == WS_UNAUTHENTICATED
            assert gone.value.rcvd.reason.startswith(f"API key {key_id} was revoked at ")
            for call in (watch, stats):
                async with asyncio.timeout(T):
                    assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
                assert (await call.details()).startswith(f"API key {key_id} was revoked at ")
            assert time.monotonic() - t0 < 5  # "at once": well within any scrape or retry
            await bystander.send(json.dumps({"op": "ping"}))
            assert json.loads(await asyncio.wait_for(bystander.recv(), T)) == {"type": "pong"}

    asyncio.run(main())


def test_a_key_that_expires_ends_its_open_streams_when_it_expires(broker: BrokerProcess) -> None:
    key = make_key(broker, ["read"], expires_in=2)
    secret, key_id = key["secret"], key["key"]["id"]
    expires_at = key["key"]["expires_at"]

    async def main() -> None:
        url = f"ws://127.0.0.1:{broker.ports['rest_port']}/ws"
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch,
            connect(url, additional_headers=bearer(secret)) as ws,
        ):
            stub = TaskQueueStub(cast(grpc.Channel, ch))
            watch: Any = stub.WatchTasks(
                pb.WatchTasksRequest(queues=[f"q-{uuid.uuid4().hex[:6]}"]),
                metadata=(("x-api-key", secret),),
            )
            await watch.initial_metadata()
            with pytest.raises(ConnectionClosed) as gone:
                await asyncio.wait_for(ws.recv(), T)
            assert gone.value.rcvd is not None
            assert gone.value.rcvd.code == WS_UNAUTHENTICATED
            assert gone.value.rcvd.reason.startswith(f"API key {key_id} expired at ")
            async with asyncio.timeout(T):
                assert await watch.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.time() >= expires_at  # ended by the expiry, not before it

    asyncio.run(main())


# ---------------------------------------------------------------------- what stays open


def test_the_openapi_document_declares_the_key_on_v1_routes_only(broker: BrokerProcess) -> None:
    doc = httpx.get(rest(broker) + "/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API key (tq_<id>_<secret>) as `Authorization: Bearer <key>`.",
    }  # fmt: skip
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            secured = "security" in operation
            assert secured == path.startswith("/v1/"), (method, path)
            if secured:
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
    too_many = doc["paths"]["/v1/stats"]["get"]["responses"]["429"]
    assert too_many["headers"]["Retry-After"]["required"] is True


def test_metrics_stay_open_with_auth_on_unless_protected(broker: BrokerProcess) -> None:
    scrape = httpx.get(f"http://127.0.0.1:{broker.ports['metrics_port']}/metrics")
    assert scrape.status_code == 200
    assert "tq_tasks_total" in scrape.text
