"""How a handler's end becomes an outcome: faults retry, Retry/Reject decide, text is bounded."""

from __future__ import annotations

import asyncio

import pytest

from tq.core.ids import TaskId
from tq.protocol.records import ClaimedTask
from tq.worker import Reject, Retry, current_task
from tq.worker.context import TaskContext, activated
from tq.worker.outcomes import (
    MAX_ERROR_LEN,
    from_exception,
    interrupted,
    missing_handler,
    succeeded,
    timed_out,
    to_outcome,
)


def claimed() -> ClaimedTask:
    return ClaimedTask(
        id=TaskId(b"\x01" * 16),
        task_type="t",
        queue="default",
        attempts=1,
        max_retries=3,
        lease_token=42,
        lease_expires_at=1.0,
        created_at=0.0,
    )


def test_an_exception_is_a_retryable_failure_named_by_its_type() -> None:
    class QuotaExceededError(Exception):
        pass

    result = from_exception(QuotaExceededError("over quota"))
    assert (result.ok, result.retry, result.error) == (False, True, "over quota")
    # __qualname__: a nested class is named with its scope, which tells same-named ones apart.
    assert result.error_type == QuotaExceededError.__qualname__
    assert result.error_type.endswith("<locals>.QuotaExceededError")


def test_an_exception_without_a_message_is_described_by_its_type() -> None:
    assert from_exception(ValueError()).error == "ValueError"


def test_a_long_error_is_cut_to_the_bound_and_says_so() -> None:
    result = from_exception(RuntimeError("x" * 50_000))
    assert result.error is not None
    assert len(result.error) == MAX_ERROR_LEN
    assert result.error.endswith("more characters)")


def test_reject_fails_for_good_with_its_reason() -> None:
    result = from_exception(Reject("bad input"))
    assert (result.ok, result.retry, result.error, result.error_type) == (
        False,
        False,
        "bad input",
        "Reject",
    )


def test_retry_asks_for_another_attempt_and_quotes_its_delay() -> None:
    result = from_exception(Retry(delay=5))
    assert (result.ok, result.retry, result.error_type) == (False, True, "Retry")
    assert result.error is not None and "5s" in result.error


def test_control_flow_signals_are_not_tq_errors() -> None:
    from tq.errors import TqError

    assert not isinstance(Retry(), TqError)
    assert not isinstance(Reject("no"), TqError)


def test_a_missing_handler_is_not_retried_and_lists_the_registered_ones() -> None:
    result = missing_handler("resize", ["echo", "json"])
    assert result.retry is False
    assert result.error == "no handler for task type 'resize' (registered: echo, json)"


def test_a_timeout_is_a_retryable_failure_naming_the_limit() -> None:
    result = timed_out(1.5)
    assert (result.ok, result.retry, result.error) == (False, True, "timed out after 1.5s")


def test_the_outcome_quotes_the_claims_lease_token() -> None:
    outcome = to_outcome(claimed(), succeeded(b"done"))
    assert (outcome.task_id, outcome.lease_token, outcome.ok, outcome.result) == (
        b"\x01" * 16,
        42,
        True,
        b"done",
    )
    failed = to_outcome(claimed(), interrupted("shutdown"))
    assert (failed.ok, failed.retry, failed.error) == (False, True, "shutdown")


def test_current_task_outside_a_task_says_so() -> None:
    with pytest.raises(RuntimeError, match="outside a task"):
        current_task()


def test_current_task_is_per_asyncio_task_and_reports_progress() -> None:
    sent: list[tuple[str, int, str | None]] = []

    def context(name: str) -> TaskContext:
        return TaskContext(
            raw_id=name.encode().ljust(16, b"\0"),
            task_type=name,
            queue="q",
            attempt=2,
            max_retries=3,
            _sink=lambda percent, message: sent.append((name, percent, message)),
        )

    async def handler(name: str) -> tuple[str, int]:
        with activated(context(name)):
            await asyncio.sleep(0)
            ctx = current_task()
            ctx.progress(50, "half")
            return ctx.task_type, ctx.attempt

    async def both() -> list[tuple[str, int]]:
        return list(await asyncio.gather(handler("a"), handler("b")))

    assert asyncio.run(both()) == [("a", 2), ("b", 2)]
    assert sorted(sent) == [("a", 50, "half"), ("b", 50, "half")]


def test_progress_outside_zero_to_one_hundred_is_refused() -> None:
    ctx = TaskContext(raw_id=b"\0" * 16, task_type="t", queue="q", attempt=1, max_retries=0)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        ctx.progress(101)


def test_the_cancelled_flag_is_visible_and_awaitable() -> None:
    ctx = TaskContext(raw_id=b"\0" * 16, task_type="t", queue="q", attempt=1, max_retries=0)
    seen = [ctx.cancelled, ctx.wait_cancelled(0.01)]
    ctx.cancel()
    seen += [ctx.cancelled, ctx.wait_cancelled(0.01)]
    assert seen == [False, False, True, True]
    assert ctx.id == "00000000-0000-0000-0000-000000000000"
