"""Flow control through REST, gRPC, the CLI and metrics against one real broker: each form
pauses and resumes a queue (seen in the queue listings), sets, lists and clears limits, and
refuses a bad limit or an unknown one with the documented code; metrics show paused queues
and what each limit counts. Claims are made over TCP, so what each
door set is checked where it acts: at claim time."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cli_procs import run_tq
from tests.integration.rawconn import RawConn
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.protocol import ClaimTask, SubmitTask, TaskSpec
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

SETTINGS: dict[str, object] = {
    "api.rest_enabled": True, "api.grpc_enabled": True, "monitoring.prometheus_enabled": True,
}  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("flow-doors") / "d", settings=SETTINGS) as b:
        yield b


def name() -> str:
    return f"flow-{uuid.uuid4().hex[:8]}"


async def submit_and_claim(port: int, queue: str, task_type: str, n: int) -> int:
    """Submit ``n`` tasks of ``task_type`` to ``queue``; how many one claim then gets."""
    conn = await RawConn.open(port)
    specs = [TaskSpec(task_type=task_type, queue=queue)] * n
    await conn.call(SubmitTask(request_id=conn.rid(), tasks=specs))
    reply = await conn.call(
        ClaimTask(request_id=conn.rid(), worker_id="w", queues=[queue], max_tasks=100)
    )
    await conn.close()
    return len(reply.tasks)


def test_rest_pauses_resumes_and_limits(broker: BrokerProcess) -> None:
    q, t = name(), name()

    async def main() -> None:
        base = f"http://127.0.0.1:{broker.ports['rest_port']}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.post(f"/v1/queues/{q}/pause")
            assert r.status_code == 200, r.text
            assert r.json()["paused"] is True and r.json()["paused_at_rfc3339"]
            (row,) = [x for x in (await http.get("/v1/queues")).json()["queues"] if x["name"] == q]
            assert row["paused"] is True
            assert (await http.get("/v1/stats")).json()["queues"][q]["paused"] is True
            assert await submit_and_claim(broker.port, q, t, 3) == 0
            r = await http.post(f"/v1/queues/{q}/resume")
            assert r.json() == {
                "queue": q, "paused": False, "paused_at": None, "paused_at_rfc3339": None,
            }  # fmt: skip

            r = await http.put(f"/v1/limits/types/{t}", json={"concurrency": 2})
            assert r.status_code == 200, r.text
            assert (r.json()["scope"], r.json()["concurrency"], r.json()["rate"]) == (
                "type",
                2,
                None,
            )
            assert await submit_and_claim(broker.port, q, t, 0) == 2  # the 3 paused ones, capped
            r = await http.put(f"/v1/limits/types/{t}", json={"rate": 5, "burst": 7})
            assert (r.json()["rate"], r.json()["burst"], r.json()["tokens"]) == (5.0, 7, 7.0)
            r = await http.put(f"/v1/limits/queues/{q}", json={"concurrency": 9})
            assert r.status_code == 200, r.text
            listed = {
                (x["scope"], x["name"]) for x in (await http.get("/v1/limits")).json()["limits"]
            }
            assert {("queue", q), ("type", t)} <= listed

            r = await http.put(f"/v1/limits/queues/{q}", json={"rate": 1})
            assert r.status_code == 422  # a queue takes a cap only: refused by the schema
            r = await http.put(f"/v1/limits/types/{t}", json={"burst": 2, "concurrency": 1})
            assert r.status_code == 422
            assert (await http.delete(f"/v1/limits/queues/{q}")).status_code == 204
            assert (await http.delete(f"/v1/limits/types/{t}")).status_code == 204
            r = await http.delete(f"/v1/limits/types/{t}")
            assert r.status_code == 404
            assert r.json()["error"]["code"] == 3010

    asyncio.run(main())


def test_grpc_pauses_resumes_and_limits(broker: BrokerProcess) -> None:
    q, t = name(), name()

    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{broker.ports['grpc_port']}") as ch:
            stub: Any = TaskQueueStub(cast(grpc.Channel, ch))
            state = await stub.PauseQueue(pb.QueueRequest(queue=q), timeout=10)
            assert state.paused and state.HasField("paused_at")
            queues = {x.name: x for x in (await stub.ListQueues(pb.ListQueuesRequest())).queues}
            assert queues[q].paused
            assert await submit_and_claim(broker.port, q, t, 2) == 0
            state = await stub.ResumeQueue(pb.QueueRequest(queue=q), timeout=10)
            assert not state.paused and not state.HasField("paused_at")

            req = pb.SetLimitRequest(scope=pb.LIMIT_SCOPE_TYPE, name=t, concurrency=1)
            limit = await stub.SetLimit(req, timeout=10)
            assert (limit.scope, limit.name, limit.concurrency) == (pb.LIMIT_SCOPE_TYPE, t, 1)
            assert not limit.HasField("rate")
            assert await submit_and_claim(broker.port, q, t, 0) == 1
            listed = (await stub.ListLimits(pb.ListLimitsRequest(), timeout=10)).limits
            (mine,) = [x for x in listed if x.name == t]
            assert mine.running == 1

            bad = pb.SetLimitRequest(scope=pb.LIMIT_SCOPE_QUEUE, name=q, rate=1.0)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.SetLimit(bad, timeout=10)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "queue takes a concurrency cap" in (e.value.details() or "")
            clear = pb.ClearLimitRequest(scope=pb.LIMIT_SCOPE_TYPE, name=t)
            await stub.ClearLimit(clear, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ClearLimit(clear, timeout=10)
            assert e.value.code() is grpc.StatusCode.NOT_FOUND
            assert dict(e.value.trailing_metadata() or ())["tq-error-code"] == "3010"
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ClearLimit(pb.ClearLimitRequest(name=t), timeout=10)
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(main())


def ok(*args: str, url: str) -> str:
    done = run_tq(*args, url=url)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_pauses_resumes_and_limits(broker: BrokerProcess) -> None:
    q, t = name(), name()
    url = broker.url
    assert f"queue {q} paused since" in ok("queues", "pause", q, url=url)
    table = ok("queues", url=url)
    (row,) = [line for line in table.splitlines() if q in line]
    assert "paused" in row
    listed = json.loads(ok("queues", "-o", "json", url=url))
    assert listed[q]["paused"] is True
    assert asyncio.run(submit_and_claim(broker.port, q, t, 2)) == 0
    assert "is running (not paused)" in ok("queues", "resume", q, url=url)
    assert json.loads(ok("queues", "-o", "json", url=url))[q]["paused"] is False

    out = ok("limits", "set", "--type", t, "--rate", "10", "--burst", "20", url=url)
    assert out.strip() == f"type {t}: at most 10 tasks/s, 20 at once"
    out = ok("limits", "set", "--queue", q, "--concurrency", "1", url=url)
    assert out.strip() == f"queue {q}: at most 1 in progress"
    assert asyncio.run(submit_and_claim(broker.port, q, t, 0)) == 1  # 2 pending, capped at 1
    limits = json.loads(ok("limits", "list", "-o", "json", url=url))
    mine = {(x["scope"], x["name"]): x for x in limits}
    assert mine["type", t]["rate"] == 10.0 and mine["type", t]["burst"] == 20
    assert mine["queue", q]["running"] == 1
    assert t in ok("limits", "list", url=url)
    assert f"queue {q}: limit cleared" in ok("limits", "clear", "--queue", q, url=url)
    ok("limits", "clear", "--type", t, url=url)

    done = run_tq("limits", "clear", "--type", t, url=url)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: [LIMIT_NOT_FOUND] no limit on type '{t}'"
    done = run_tq("limits", "set", "--queue", q, "--rate", "3", url=url)
    assert done.returncode == 2
    assert "queue takes a concurrency cap" in done.stderr
    done = run_tq("limits", "set", "--queue", q, "--type", t, "--concurrency", "1", url=url)
    assert done.returncode == 2
    assert "exactly one of --queue and --type" in done.stderr


def test_metrics_show_paused_queues_and_what_limits_count(broker: BrokerProcess) -> None:
    q, t = name(), name()

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{broker.ports['metrics_port']}/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    ok("queues", "pause", q, url=broker.url)
    ok("limits", "set", "--type", t, "--rate", "0.5", "--burst", "3", url=broker.url)
    assert asyncio.run(submit_and_claim(broker.port, "elsewhere-" + q, t, 2)) == 2
    got = samples()
    assert got["tq_broker_queue_paused", (("queue", q),)] == 1
    assert got["tq_broker_queue_paused", (("queue", "default"),)] == 0
    assert got["tq_limit_running", (("name", t), ("scope", "type"))] == 2
    assert 1.0 <= got["tq_limit_tokens", (("task_type", t),)] < 1.5  # 3 - 2, refilling slowly
    ok("queues", "resume", q, url=broker.url)
    ok("limits", "clear", "--type", t, url=broker.url)
    got = samples()
    assert got["tq_broker_queue_paused", (("queue", q),)] == 0
    assert ("tq_limit_tokens", (("task_type", t),)) not in got
