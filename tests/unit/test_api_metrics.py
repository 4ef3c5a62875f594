"""The metrics front door in process: histograms, the collector over a real service on the
in-memory store, and the little HTTP server on a real socket (port 0)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpx
import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tq.api.metrics import MetricsServer, parse_head
from tq.broker.access import Principal
from tq.broker.instruments import Histogram
from tq.broker.service import BrokerService
from tq.client import task_spec
from tq.config import load
from tq.core.ids import WorkerId
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.core.replies import ClaimedTask
from tq.errors import ConfigError
from tq.protocol.records import TaskOutcome
from tq.storage import MemoryStore
from tq.storage.commit import GroupCommit

ANYONE = Principal.ANYONE

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def make_service() -> BrokerService:
    settings = load(env={}, overrides={"monitoring.prometheus_port": 0})
    return BrokerService(settings, MemoryStore(), Machine())


def run(body: Callable[[BrokerService, MetricsServer], Awaitable[None]]) -> None:
    async def main() -> None:
        service = make_service()
        server = MetricsServer(service, service.settings)
        await server.start()
        try:
            async with asyncio.timeout(30):
                await body(service, server)
        finally:
            await server.stop()
            await service.commit.close()

    asyncio.run(main())


async def claim(service: BrokerService, n: int) -> list[ClaimedTask]:
    got: list[ClaimedTask] = []
    service.claim(ANYONE, WorkerId("w1"), ["default"], n, 0, got.extend)
    return got


async def report(service: BrokerService, outcomes: Sequence[TaskOutcome]) -> list[int]:
    codes, durable = service.report(ANYONE, outcomes)
    await durable
    return codes


def test_a_histogram_counts_a_value_on_a_bound_in_that_bound_and_reads_cumulative() -> None:
    h = Histogram([0.1, 1.0])
    for v in (0.1, 0.05, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.counts == [2, 2, 1]
    assert h.count == 5
    assert h.sum == pytest.approx(8.65)
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]


def test_group_commit_reports_each_fsync_with_the_mutations_it_made_durable() -> None:
    heard: list[tuple[int, float]] = []

    def put(gc: GroupCommit, n: int) -> None:
        gc.write([(Family.PENDING, bytes([i]), b"v") for i in range(n)])

    async def main() -> None:
        async with asyncio.timeout(30):
            gc = GroupCommit(MemoryStore())
            gc.on_sync = lambda n, seconds: heard.append((n, seconds))
            put(gc, 2)
            put(gc, 3)
            await gc.durable()
            put(gc, 1)
            await gc.durable()
            await gc.close()
            relaxed = GroupCommit(MemoryStore(), relaxed=True)
            relaxed.on_sync = gc.on_sync
            put(relaxed, 4)
            job = asyncio.create_task(relaxed.run_relaxed_sync(0.001))
            while len(heard) < 3:
                await asyncio.sleep(0.001)  # polling a condition under the timeout above
            job.cancel()
            await relaxed.close()

    asyncio.run(main())
    assert [n for n, _ in heard] == [5, 1, 4]
    assert all(seconds >= 0 for _, seconds in heard)


def test_the_metrics_follow_submits_claims_outcomes_and_fsyncs() -> None:
    async def body(service: BrokerService, server: MetricsServer) -> None:
        durable = service.register(
            ANYONE, WorkerId("w1"), name="w", queues=["default"], concurrency=4, hostname="h", pid=1
        )
        specs = [task_spec("t", priority=p) for p in (10, 150, 150, 250, 250, 250)]
        _, submitted = service.submit(ANYONE, specs)
        await asyncio.gather(durable, submitted)
        found = samples(server.render()[0].decode())
        assert value(found, "tq_tasks_total", outcome="submitted") == 6
        assert value(found, "tq_tasks_pending") == 6
        for tier, n in (("low", 1), ("normal", 2), ("high", 3)):
            assert value(found, "tq_broker_queue_depth", queue="default", tier=tier) == n
        assert value(found, "tq_workers_connected") == 1
        assert value(found, "tq_group_commit_fsync_duration_seconds_count") >= 1
        assert value(found, "tq_group_commit_batch_size_sum") >= 7  # 6 tasks + the worker

        tasks = await claim(service, 6)
        assert len(tasks) == 6
        found = samples(server.render()[0].decode())
        assert value(found, "tq_tasks_in_progress") == 6
        assert value(found, "tq_tasks_pending") == 0
        assert value(found, "tq_claim_latency_seconds_count") == 0  # TCP claims only

        ok = [TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True) for t in tasks[:4]]
        retry, dead = (
            TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=False, error="x", retry=r)
            for t, r in zip(tasks[4:], (True, False), strict=True)
        )
        stale = TaskOutcome(task_id=tasks[0].id, lease_token=tasks[0].lease_token, ok=True)
        assert await report(service, [*ok, retry, dead]) == [0] * 6
        assert await report(service, [stale]) != [0]  # refused outcomes are not observed

        found = samples(server.render()[0].decode())
        assert value(found, "tq_tasks_total", outcome="completed") == 4
        assert value(found, "tq_tasks_total", outcome="failed") == 2
        assert value(found, "tq_tasks_total", outcome="claimed") == 6
        assert value(found, "tq_retries_total") == 1
        assert value(found, "tq_dead_letters_total") == 1
        assert value(found, "tq_tasks_dead_letter") == 1
        assert value(found, "tq_tasks_retry_waiting") == 1
        assert value(found, "tq_tasks_in_progress") == 0
        processing = "tq_task_processing_duration_seconds_count"
        assert value(found, processing, outcome="completed") == 4
        assert value(found, processing, outcome="failed") == 2
        assert value(found, "tq_broker_ready") == 1
        assert value(found, "tq_group_commit_fsyncs_total") >= 1
        assert ("process_cpu_seconds_total", ()) in found
        assert value(found, "tq_broker_info", node_id=service.node_id, version="0.1.0") == 1

    run(body)


def test_stopping_the_server_detaches_its_instruments() -> None:
    def attached(service: BrokerService) -> tuple[object, object]:
        return service.instruments, service.commit.on_sync

    async def body(service: BrokerService, server: MetricsServer) -> None:
        assert attached(service) == (server.instruments, server.instruments.on_sync)
        await server.stop()
        assert attached(service) == (None, None)

    run(body)


def test_the_server_answers_get_and_head_on_metrics_and_refuses_the_rest() -> None:
    async def body(service: BrokerService, server: MetricsServer) -> None:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            got = await http.get("/metrics")
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE tq_tasks_total counter" in got.text
            again = await http.get("/metrics")  # the same kept-alive connection
            assert again.status_code == 200
            head = await http.head("/metrics")
            assert (head.status_code, head.content) == (200, b"")
            assert int(head.headers["content-length"]) > 0
            om = await http.get("/metrics", headers={"accept": "application/openmetrics-text"})
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.endswith("# EOF\n")
            assert (await http.get("/")).status_code == 200
            missing = await http.get("/nope")
            assert missing.status_code == 404
            assert "/metrics" in missing.text
            post = await http.post("/metrics", content=b"x")
            assert post.status_code == 405
            assert post.headers["allow"] == "GET, HEAD"

    run(body)


def test_a_failing_collector_costs_one_scrape_a_500_not_the_server() -> None:
    class Broken(Collector):
        def collect(self) -> Iterable[Metric]:
            raise RuntimeError("disk on fire")

    async def body(service: BrokerService, server: MetricsServer) -> None:
        broken = Broken()
        server.registry.register(broken)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            failed = await http.get("/metrics", timeout=10)
            assert failed.status_code == 500
            assert "RuntimeError: disk on fire" in failed.text
            server.registry.unregister(broken)
            assert (await http.get("/metrics", timeout=10)).status_code == 200

    run(body)


@pytest.mark.parametrize(
    "raw",
    [b"garbage\r\n\r\n", b"GET /metrics SPDY/9\r\n\r\n", b"GET /metrics HTTP/1.1\r\nbad\r\n\r\n"],
)
def test_a_malformed_request_gets_400_and_the_connection_closes(raw: bytes) -> None:
    async def body(service: BrokerService, server: MetricsServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        answer = await reader.read()  # EOF: the server closed
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")

    run(body)


def test_an_oversized_request_head_gets_431() -> None:
    async def body(service: BrokerService, server: MetricsServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431 ")

    run(body)


def test_a_busy_metrics_port_is_one_config_error_naming_it() -> None:
    async def main() -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            settings = load(env={}, overrides={"monitoring.prometheus_port": port})
            server = MetricsServer(BrokerService(settings, MemoryStore(), Machine()), settings)
            with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
                await server.start()

    asyncio.run(main())


def test_parse_head_reads_keep_alive_by_http_version() -> None:
    one_one = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: text/plain\r\n\r\n")
    assert one_one is not None
    assert (one_one.path, one_one.keep_alive, one_one.accept) == ("/metrics", True, "text/plain")
    one_zero = parse_head(b"GET / HTTP/1.0\r\n\r\n")
    assert one_zero is not None
    assert not one_zero.keep_alive
    closing = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert closing is not None
    assert not closing.keep_alive
