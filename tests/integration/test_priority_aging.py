"""Priority aging through a real broker (docs/priority-aging.md): under a sustained flood of
high-priority tasks a low-priority task is served when aging is on, and starves for as long
when it is off: on a broker without aging, in an exempt queue, or opted out per task."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_procs import REPO, child_env
from tq.client import AsyncClient, task_spec
from tq.config import BrokerSettings
from tq.protocol import TaskOutcome
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)

#: +50 every 0.5 s: a priority-0 task reaches the flood's 200 after 2 s of waiting.
AGING = {
    "broker.priority_aging_interval_s": 0.5,
    "broker.priority_aging_step": 50,
    "broker.priority_aging_exempt_queues": "exempt",
    "api.rest_enabled": False,
    "api.grpc_enabled": False,
}
OFF = {"api.rest_enabled": False, "api.grpc_enabled": False}
BACKLOG = 100  # high-priority tasks kept waiting ahead of the low one, all along
BATCH = 4  # claimed, completed and replaced per round
#: How long a flood runs: aging serves the low task after ~2 s; without, it must not be
#: served for this long (the same duration either way).
FLOOD_S = 6.0


@pytest.fixture(scope="module")
def aging_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("aging") / "d", settings=AGING) as b:
        yield b


def queue() -> str:
    return f"aging-{uuid.uuid4().hex[:8]}"


async def flood(client: AsyncClient, queue: str, *, aging: bool = True) -> tuple[float | None, int]:
    """Keep ``BACKLOG`` priority-200 tasks pending ahead of one priority-0 task, claiming,
    completing and replacing ``BATCH`` of them at a time for up to ``FLOOD_S``. Returns the
    seconds until the low task was claimed (None: not within the flood) and how many
    high-priority tasks were served meanwhile."""
    high = [task_spec("job", queue=queue, priority=200) for _ in range(BACKLOG)]
    await client.submit_many(high)
    low = await client.submit("job", queue=queue, priority=0, aging=aging)
    started, served = time.monotonic(), 0
    while time.monotonic() - started < FLOOD_S:
        claimed = await client.claim("flooded", [queue], max_tasks=BATCH)
        assert len(claimed) == BATCH, "the backlog ran dry: this is no flood"
        outcomes = [TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True) for t in claimed]
        assert await client.report(outcomes) == [0] * BATCH
        if any(t.id.hex() == low.replace("-", "") for t in claimed):
            return time.monotonic() - started, served
        served += BATCH
        await client.submit_many([task_spec("job", queue=queue, priority=200)] * BATCH)
    return None, served


def test_with_aging_a_low_task_is_served_under_a_flood_of_high_ones(
    aging_broker: BrokerProcess,
) -> None:
    async def main() -> None:
        async with AsyncClient(aging_broker.url) as client:
            waited, served = await flood(client, queue())
            assert waited is not None, f"starved: {served} high tasks served in {FLOOD_S} s"
            # It climbs 50 per 0.5 s: level with the flood's 200 after 2 s, then first by age.
            assert 1.9 <= waited < FLOOD_S
            assert served > 0

    asyncio.run(main())


@pytest.mark.parametrize("how", ["exempt queue", "task opted out"])
def test_a_low_task_starves_where_aging_is_off(aging_broker: BrokerProcess, how: str) -> None:
    async def main() -> None:
        async with AsyncClient(aging_broker.url) as client:
            if how == "exempt queue":
                waited, served = await flood(client, "exempt")
            else:
                waited, served = await flood(client, queue(), aging=False)
            assert waited is None, f"served after {waited:.1f} s"
            assert served >= 40  # the flood was real: high tasks kept flowing

    asyncio.run(main())


def test_a_low_task_starves_on_a_broker_without_aging(tmp_path: Path) -> None:
    async def main(b: BrokerProcess) -> None:
        async with AsyncClient(b.url) as client:
            waited, served = await flood(client, queue())
            assert waited is None, f"served after {waited:.1f} s"
            assert served >= 40

    with BrokerProcess(tmp_path / "d", settings=OFF) as b:
        asyncio.run(main(b))


def test_status_shows_the_priority_a_waiting_task_has_reached(aging_broker: BrokerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(aging_broker.url) as client:
            q = queue()
            aged = await client.submit("job", queue=q, priority=10)
            fixed = await client.submit("job", queue=q, priority=10, aging=False)
            info = await client.status(aged)
            assert info.aging is True and info.priority == 10
            deadline = time.monotonic() + 30
            while (info := await client.status(aged)).effective_priority in (10, 60):
                assert time.monotonic() < deadline, info
                await asyncio.sleep(0.05)
            assert info.priority == 10 and info.effective_priority is not None
            assert info.effective_priority >= 110  # +50 per 0.5 s waited
            still = await client.status(fixed)
            assert (still.aging, still.priority, still.effective_priority) == (False, 10, 10)
            claimed = await client.claim("w", [q], max_tasks=2)
            assert [t.id.hex() for t in claimed] == [aged.replace("-", ""), fixed.replace("-", "")]
            assert (await client.status(aged)).effective_priority is None  # not pending

    asyncio.run(main())


EXAMPLE = REPO / "examples" / "priority_aging.py"
DOC = (REPO / "docs" / "priority-aging.md").read_text(encoding="utf-8")


def test_the_example_runs_as_the_page_says(tmp_path: Path) -> None:
    # The page's broker ages by 50 every second; four times faster here, same output.
    settings = {**AGING, "broker.priority_aging_interval_s": 0.25, "broker.priority_aging_max": 200}
    with BrokerProcess(tmp_path / "d", settings=settings) as b:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            capture_output=True, text=True, timeout=60, env=child_env(b.url), cwd=REPO,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "low: priority 0, effective 200",
        "pinned: priority 0, effective 0",
        "high: priority 200, effective 200",
        "claimed: low high pinned",
    ]


def test_the_page_shows_the_example_verbatim_and_its_settings_exist() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in DOC
    keys = set(re.findall(r"broker\.priority_aging_\w+", DOC + EXAMPLE.read_text()))
    assert keys == {f"broker.{k}" for k in BrokerSettings.model_fields if "aging" in k}


def test_a_waiting_task_keeps_its_age_across_a_broker_kill_and_restart(tmp_path: Path) -> None:
    async def submit_and_age(url: str) -> tuple[str, int]:
        async with AsyncClient(url) as client:
            task_id = await client.submit("job", queue="kept", priority=0)
            deadline = time.monotonic() + 30
            while ((await client.status(task_id)).effective_priority or 0) < 100:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return task_id, (await client.status(task_id)).effective_priority or 0

    async def effective(url: str, task_id: str) -> int | None:
        async with AsyncClient(url) as client:
            return (await client.status(task_id)).effective_priority

    settings = {**AGING, "broker.priority_aging_interval_s": 0.25}
    b = BrokerProcess(tmp_path / "d", settings=settings)
    with b:
        task_id, reached = asyncio.run(submit_and_age(b.url))
        b.kill()
        b.start()
        after = asyncio.run(effective(b.url, task_id))
    # Its wait counts from its submission, not from the restart.
    assert after is not None and after >= reached >= 100
