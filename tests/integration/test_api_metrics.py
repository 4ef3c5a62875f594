"""/metrics of a real broker process: tasks go through it over TCP (a client and a tiny
in-test worker), then httpx scrapes, and promtool checks the exposition."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.tools import require_tool
from tq.client import AsyncClient
from tq.protocol import ClaimedTask, TaskOutcome
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WORKER = "metrics-test-worker"
#: Every metric the issue and SPEC §13 name (histograms by their _count series).
REQUIRED = (
    "tq_tasks_total",
    "tq_tasks_pending",
    "tq_tasks_in_progress",
    "tq_task_processing_duration_seconds_count",
    "tq_workers_connected",
    "tq_broker_queue_depth",
    "tq_submit_latency_seconds_count",
    "tq_claim_latency_seconds_count",
    "tq_group_commit_batch_size_count",
    "tq_group_commit_fsync_duration_seconds_count",
    "tq_connections",
    "tq_leases_expired_total",
    "tq_retries_total",
    "tq_dead_letters_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
)


#: Metrics on, the other management doors off: these tests are about this one.
METRICS_ONLY = {
    "monitoring.prometheus_enabled": True,
    "api.rest_enabled": False,
    "api.websocket_enabled": False,
    "api.grpc_enabled": False,
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path / "d", settings=METRICS_ONLY) as b:
        yield b


def metrics_url(b: BrokerProcess) -> str:
    return f"http://{b.host}:{b.ports['metrics_port']}/metrics"


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    got = await http.get(url)
    assert got.status_code == 200, got.text
    return parse(got.text)


async def claim_all(client: AsyncClient, n: int) -> list[ClaimedTask]:
    """Claim ``n`` tasks (long polls, bounded by the test timeout and a deadline)."""
    claimed: list[ClaimedTask] = []
    async with asyncio.timeout(30):
        while len(claimed) < n:
            claimed += await client.claim(WORKER, ["default"], max_tasks=n, wait=1.0)
    return claimed


def test_the_metrics_move_with_the_tasks_a_worker_runs(broker: BrokerProcess) -> None:
    async def main() -> None:
        url = metrics_url(broker)
        async with AsyncClient(broker.url) as client, httpx.AsyncClient(timeout=10) as http:
            before = await scrape(http, url)
            assert value(before, "tq_tasks_total", outcome="submitted") == 0
            priorities = [10] * 2 + [150] * 3 + [250] * 5
            await asyncio.gather(*(client.submit("t", b"x", priority=p) for p in priorities))
            queued = await scrape(http, url)
            assert value(queued, "tq_tasks_pending") == 10
            for tier, n in (("low", 2), ("normal", 3), ("high", 5)):
                assert value(queued, "tq_broker_queue_depth", queue="default", tier=tier) == n
            assert value(queued, "tq_submit_latency_seconds_count") == 10
            assert value(queued, "tq_connections", door="tcp") == 1

            await client.register_worker(
                WORKER, name="w", queues=["default"], concurrency=10, hostname="h",
                pid=os.getpid(), pool="asyncio",
            )  # fmt: skip
            claimed = await claim_all(client, 10)
            running = await scrape(http, url)
            assert value(running, "tq_tasks_in_progress") == 10
            assert value(running, "tq_workers_connected") == 1
            assert value(running, "tq_claim_latency_seconds_count") >= 1

            outcomes = [TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True)
                        for t in claimed[:8]]  # fmt: skip
            outcomes += [
                TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=False, error="no",
                            retry=False)
                for t in claimed[8:]
            ]  # fmt: skip
            assert await client.report(outcomes) == [0] * 10
            after = await scrape(http, url)

        assert value(after, "tq_tasks_total", outcome="submitted") == 10
        assert value(after, "tq_tasks_total", outcome="claimed") == 10
        assert value(after, "tq_tasks_total", outcome="completed") == 8
        assert value(after, "tq_tasks_total", outcome="failed") == 2
        assert value(after, "tq_dead_letters_total") == 2
        assert value(after, "tq_tasks_in_progress") == 0
        assert value(after, "tq_tasks_pending") == 0
        duration = "tq_task_processing_duration_seconds"
        assert value(after, f"{duration}_count", outcome="completed") == 8
        assert value(after, f"{duration}_count", outcome="failed") == 2
        assert value(after, f"{duration}_bucket", outcome="completed", le="+Inf") == 8
        assert value(after, "tq_group_commit_fsyncs_total") >= 1
        assert value(after, "tq_group_commit_fsync_duration_seconds_count") >= 1
        assert value(after, "tq_group_commit_batch_size_sum") >= 30  # submits, claims, outcomes
        names = {name for name, _ in after}
        assert not [name for name in REQUIRED if name not in names]

    asyncio.run(main())


def test_promtool_accepts_the_exposition(broker: BrokerProcess) -> None:
    promtool = require_tool("promtool")

    async def load_some() -> None:
        async with AsyncClient(broker.url) as client:
            await asyncio.gather(*(client.submit("t", queue=f"q{i % 3}") for i in range(20)))

    asyncio.run(load_some())
    text = httpx.get(metrics_url(broker), timeout=10).text
    assert "tq_broker_queue_depth{" in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (done.stdout + done.stderr).strip(), done.stdout + done.stderr  # not even a lint


def test_a_broker_with_metrics_disabled_opens_no_metrics_port(tmp_path: Path) -> None:
    settings = {**METRICS_ONLY, "monitoring.prometheus_enabled": False}
    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        assert "metrics_port" not in b.ports
        assert b.ports["port"] > 0
