"""An outcome reported twice to a real broker (its first reply lost with the connection, so the
worker sends it again) is logged as already recorded, not as a lost result."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tq.client import AsyncClient, TaskOutcome
from tq.testing import BrokerProcess
from tq.worker.reporting import Reporter

pytestmark = pytest.mark.timeout(60)


async def report_twice(url: str, outcome_of: str) -> Reporter:
    async with AsyncClient(url) as client:
        task_id = await client.submit("t", b"{}", queue="again")
        await client.register_worker("w", name="w", queues=["again"], concurrency=1,
                                     hostname="h", pid=1, pool="asyncio")  # fmt: skip
        (claimed,) = await client.claim("w", ["again"], max_tasks=1, wait=5.0)
        ok = outcome_of == "completed"
        outcome = TaskOutcome(
            task_id=claimed.id, lease_token=claimed.lease_token, ok=ok, result=b"r" if ok else None,
            error=None if ok else "boom", error_type=None if ok else "RuntimeError", retry=False,
        )  # fmt: skip
        reporter = Reporter(client)
        runner = asyncio.ensure_future(reporter.run())
        try:
            for _ in range(2):  # the second is what a reconnected worker sends again
                reporter.put(outcome)
                assert await reporter.flush(10)
        finally:
            runner.cancel()
        assert (await client.status(task_id)).state == outcome_of
        return reporter


@pytest.mark.parametrize("outcome_of", ["completed", "dead_letter"])
def test_an_outcome_sent_again_is_already_recorded_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outcome_of: str
) -> None:
    caplog.set_level(logging.INFO, logger="tq.worker.reporting")
    with BrokerProcess(tmp_path / "data") as broker:
        reporter = asyncio.run(report_twice(broker.url, outcome_of))
    assert (reporter.sent, reporter.dropped) == (2, 0)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.INFO]
    assert messages[0][1].startswith("result.already_recorded task=")
    assert messages[0][1].endswith(f"state={outcome_of}")
