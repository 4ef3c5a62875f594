"""Retry, delete and bulk actions through the public clients against a real broker: per-task
results in the broker's words, and bulk by filter paged past 10,000 tasks with progress."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.dead_letters import dead_lettered
from tq.client import AsyncClient, BulkProgress, Client, TaskFilter
from tq.errors import ConflictError, ErrorCode, NotFoundError, ValidationError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(180)

FAR = 3600.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("bulk") / "data") as b:
        yield b


@pytest.fixture(scope="module")
def client(broker: BrokerProcess) -> Iterator[Client]:
    with Client(broker.url) as c:
        yield c


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def test_retry_requeues_a_dead_lettered_task_with_its_error_cleared(
    client: Client, queue: str
) -> None:
    (task_id,) = dead_lettered(client, queue, 1, error="disk full")
    dead = client.status(task_id)
    assert (dead.state, dead.error, dead.error_type) == ("dead_letter", "disk full", "ValueError")
    client.retry(task_id)
    info = client.status(task_id)
    assert (info.state, info.attempts, info.error) == ("pending", 0, None)


def test_retry_of_a_task_not_in_dead_letter_is_refused_in_the_brokers_words(
    client: Client, queue: str
) -> None:
    task_id = client.submit("t", queue=queue, delay=FAR)
    with pytest.raises(ConflictError) as info:
        client.retry(task_id)
    assert info.value.code == ErrorCode.INVALID_STATE
    assert info.value.message == (
        f"cannot retry task {task_id}: only dead_letter tasks can be retried, and it is scheduled"
    )
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFoundError, match=f"no task with id {unknown}"):
        client.retry(unknown)


def test_delete_removes_a_finished_task_and_refuses_a_live_one(client: Client, queue: str) -> None:
    (dead,) = dead_lettered(client, queue, 1)
    live = client.submit("t", queue=queue, delay=FAR)
    with pytest.raises(ConflictError, match="cancel it first"):
        client.delete(live)
    client.delete(dead)
    with pytest.raises(NotFoundError):
        client.status(dead)
    client.cancel(live)
    client.delete(live)
    with pytest.raises(NotFoundError):
        client.status(live)


def test_retry_many_and_delete_many_answer_each_id(client: Client, queue: str) -> None:
    dead = dead_lettered(client, queue, 2)
    live = client.submit("t", queue=queue, delay=FAR)
    unknown = str(uuid.uuid4())
    results = client.retry_many([dead[0], live, unknown, dead[1], dead[0]])
    assert [(r.task_id, r.ok) for r in results] == [
        (dead[0], True), (live, False), (unknown, False), (dead[1], True),
    ]  # fmt: skip
    assert results[1].code == ErrorCode.INVALID_STATE
    assert isinstance(results[2].error, NotFoundError)
    assert results[0].error is None
    client.cancel_many(dead)
    deleted = client.delete_many([*dead, live])
    assert [r.ok for r in deleted] == [True, True, False]
    assert "only finished tasks can be deleted, and it is scheduled" in deleted[2].message


def test_retry_where_pages_past_ten_thousand_tasks_with_progress(
    client: Client, queue: str
) -> None:
    n = 10_500
    ids = dead_lettered(client, queue, n)
    seen: list[BulkProgress] = []
    outcome = client.retry_where(TaskFilter(state="dead_letter", queue=queue), progress=seen.append)
    assert outcome.applied == ids  # each once, in id order
    assert outcome.failed == []
    assert outcome.calls == len(seen) == 11  # pages of 1000
    assert [p.applied for p in seen] == [*range(1000, n, 1000), n]
    assert [p.done for p in seen] == [False] * 10 + [True]
    assert client.list_tasks(queue=queue, state="dead_letter")[0] == []
    pending, _ = client.list_tasks(queue=queue, state="pending", limit=5)
    assert len(pending) == 5


def test_a_bulk_action_that_changes_nothing_still_ends(client: Client, queue: str) -> None:
    ids = client.submit_many([client.spec("t", queue=queue, delay=FAR)] * 25)
    outcome = client.retry_where(TaskFilter(queue=queue), page_size=10)
    assert outcome.applied == []
    assert [r.task_id for r in outcome.failed] == ids
    assert {r.code for r in outcome.failed} == {ErrorCode.INVALID_STATE}
    assert outcome.calls == 3


def test_delete_where_and_cancel_where_act_on_what_the_filter_selects(
    client: Client, queue: str
) -> None:
    ids = client.submit_many([client.spec("t", queue=queue, delay=FAR)] * 30)
    cancelled = client.cancel_where(TaskFilter(queue=queue, state="scheduled"), page_size=7)
    assert (cancelled.applied, cancelled.calls) == (ids, 5)
    deleted = client.delete_where(TaskFilter(queue=queue, state="cancelled"))
    assert deleted.applied == ids
    assert client.list_tasks(queue=queue) == ([], None)


def test_bad_filters_are_refused_naming_what_was_wrong(client: Client) -> None:
    with pytest.raises(ValidationError, match="state 'dead' is not one of"):
        client.retry_where(TaskFilter(state="dead"))
    with pytest.raises(ValidationError, match="the filter selects every task"):
        client.delete_where(TaskFilter())
    with pytest.raises(ValidationError, match=r"page_size 0 is outside 1\.\.10000"):
        client.retry_where(TaskFilter(queue="q"), page_size=0)


def test_the_async_client_retries_and_deletes_too(broker: BrokerProcess, client: Client) -> None:
    queue = f"q-{uuid.uuid4().hex[:12]}"
    dead = dead_lettered(client, queue, 3)

    async def main() -> None:
        async with AsyncClient(broker.url) as aclient:
            await aclient.retry(dead[0])
            assert (await aclient.status(dead[0])).state == "pending"
            outcome = await aclient.delete_where(TaskFilter(queue=queue, state="dead_letter"))
            assert outcome.applied == dead[1:]
            results = await aclient.delete_many(dead)
            assert [r.code for r in results] == [ErrorCode.INVALID_STATE] + [
                ErrorCode.TASK_NOT_FOUND
            ] * 2

    asyncio.run(asyncio.wait_for(main(), 60))
