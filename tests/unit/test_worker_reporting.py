"""Outcome batching and retry, progress coalescing: against a scripted in-memory broker port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from tq.core.ids import TaskId, format_task_id
from tq.errors import ErrorCode, UnavailableError, ValidationError
from tq.protocol.records import ClaimedTask, TaskInfo, TaskOutcome
from tq.worker.reporting import ProgressSender, Reporter
from tq.worker.retrying import Backoff


def number(n: int) -> TaskId:
    return TaskId(n.to_bytes(16, "big"))


def outcome(n: int, *, result: bytes = b"r") -> TaskOutcome:
    return TaskOutcome(task_id=number(n), lease_token=n, ok=True, result=result)


def failure(n: int) -> TaskOutcome:
    return TaskOutcome(
        task_id=number(n), lease_token=n, ok=False, error="boom", error_type="RuntimeError"
    )


def record(n: int, state: str, **fields: object) -> TaskInfo:
    return TaskInfo(
        id=number(n), task_type="t", queue="q", state=state, created_at=1.0, updated_at=2.0,
        max_retries=3, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


class FakeBroker:
    """Answers report() from a script of failures, then with per-outcome codes."""

    def __init__(
        self,
        failures: Sequence[Exception] = (),
        codes: dict[int, int] | None = None,
        records: dict[int, TaskInfo] | None = None,
    ):
        self.failures = list(failures)
        self.codes = codes or {}
        #: What status_many answers, by lease token (= task number); missing: no such task.
        self.records = records
        self.lookups: list[list[str]] = []
        self.batches: list[list[int]] = []
        self.progress_calls: list[tuple[int, str | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def report(self, outcomes: Sequence[TaskOutcome]) -> list[int]:
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append([o.lease_token for o in outcomes])
        return [self.codes.get(o.lease_token, 0) for o in outcomes]

    async def status_many(self, ids: list[str]) -> list[TaskInfo | None]:
        self.lookups.append(ids)
        if self.records is None:
            raise UnavailableError("gone again")
        by_id = {format_task_id(number(n)): info for n, info in self.records.items()}
        return [by_id.get(i) for i in ids]

    async def progress(
        self, task_id: bytes, lease_token: int, percent: int, message: str | None = None
    ) -> None:
        await self.gate.wait()
        self.progress_calls.append((percent, message))


async def with_reporter(broker: FakeBroker, body: object) -> Reporter:
    reporter = Reporter(broker)
    runner = asyncio.ensure_future(reporter.run())
    try:
        await body(reporter)  # type: ignore[operator]
        assert await reporter.flush(5)
    finally:
        runner.cancel()
    return reporter


def test_outcomes_finished_in_one_loop_turn_go_in_one_report() -> None:
    broker = FakeBroker()

    async def body(reporter: Reporter) -> None:
        for n in range(50):
            reporter.put(outcome(n))

    asyncio.run(with_reporter(broker, body))
    assert broker.batches == [list(range(50))]


def test_outcomes_arriving_during_a_report_form_the_next_batch() -> None:
    broker = FakeBroker()

    async def body(reporter: Reporter) -> None:
        reporter.put(outcome(0))
        await asyncio.sleep(0.01)
        broker.gate.clear()  # the second report is in flight and stuck
        reporter.put(outcome(1))
        await asyncio.sleep(0.01)
        for n in range(2, 10):
            reporter.put(outcome(n))
        broker.gate.set()

    asyncio.run(with_reporter(broker, body))
    assert broker.batches == [[0], [1], list(range(2, 10))]


def test_a_lost_connection_keeps_the_batch_and_retries_it() -> None:
    broker = FakeBroker(failures=[UnavailableError("gone"), UnavailableError("still gone")])

    async def body(reporter: Reporter) -> None:
        reporter.put(outcome(1))
        reporter.put(outcome(2))

    reporter = asyncio.run(with_reporter(broker, body))
    assert broker.batches == [[1, 2]]
    assert reporter.sent == 2


def test_lease_mismatch_results_are_dropped_and_counted() -> None:
    broker = FakeBroker(codes={2: ErrorCode.LEASE_MISMATCH}, records={2: record(2, "pending")})

    async def body(reporter: Reporter) -> None:
        for n in (1, 2, 3):
            reporter.put(outcome(n))

    reporter = asyncio.run(with_reporter(broker, body))
    assert (reporter.sent, reporter.dropped) == (2, 1)


def report_all(broker: FakeBroker, *outcomes: TaskOutcome) -> Reporter:
    async def body(reporter: Reporter) -> None:
        for o in outcomes:
            reporter.put(o)

    return asyncio.run(with_reporter(broker, body))


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tq.worker.reporting"]


@pytest.mark.parametrize(
    ("sent", "code", "held"),
    [
        (outcome(1), ErrorCode.INVALID_STATE, record(1, "completed", result=b"r")),
        (failure(1), ErrorCode.LEASE_MISMATCH, record(1, "failed", error="boom",
                                                      error_type="RuntimeError")),
        (failure(1), ErrorCode.INVALID_STATE, record(1, "dead_letter", error="boom",
                                                     error_type="RuntimeError")),
    ],
)  # fmt: skip
def test_an_outcome_sent_again_after_a_lost_reply_is_logged_as_already_recorded(
    caplog: pytest.LogCaptureFixture, sent: TaskOutcome, code: int, held: TaskInfo
) -> None:
    caplog.set_level(logging.DEBUG)
    reporter = report_all(FakeBroker(codes={1: code}, records={1: held}), sent)
    assert (reporter.sent, reporter.dropped) == (1, 0)
    ((level, message),) = logged(caplog)
    assert level == logging.INFO
    assert message == f"result.already_recorded task={format_task_id(number(1))} state={held.state}"


def test_an_outcome_of_a_task_cancelled_while_it_ran_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = FakeBroker(codes={1: ErrorCode.INVALID_STATE}, records={1: record(1, "cancelled")})
    reporter = report_all(broker, outcome(1))
    assert reporter.dropped == 1
    assert [level for level, _ in logged(caplog)] == [logging.INFO]
    assert "result.not_needed" in logged(caplog)[0][1]


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ({1: record(1, "in_progress")}, "lease lost, the broker re-runs it"),  # run elsewhere
        ({1: record(1, "failed", error="another attempt's")}, "lease lost"),
        ({}, "the broker has no such task now"),
        (None, "(could not look it up)"),
    ],
)
def test_an_outcome_the_broker_does_not_hold_is_a_warning(
    caplog: pytest.LogCaptureFixture, records: dict[int, TaskInfo] | None, reason: str
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = failure(1) if records and records[1].state == "failed" else outcome(1)
    broker = FakeBroker(codes={1: ErrorCode.LEASE_MISMATCH}, records=records)
    reporter = report_all(broker, sent)
    assert (reporter.sent, reporter.dropped) == (0, 1)
    (warning,) = [m for level, m in logged(caplog) if level == logging.WARNING]
    assert warning.startswith(
        f"result.dropped task={format_task_id(number(1))} code=LEASE_MISMATCH"
    )
    assert reason in warning


def test_a_refused_report_is_retried_one_by_one_and_a_refused_result_becomes_a_failure() -> None:
    broker = FakeBroker(failures=[ValidationError("payload too large"), ValidationError("big")])

    async def body(reporter: Reporter) -> None:
        reporter.put(outcome(1))
        reporter.put(outcome(2))

    reporter = asyncio.run(with_reporter(broker, body))
    # Whole batch refused; outcome 1 alone refused, so its failure form is sent; 2 goes alone.
    assert broker.batches == [[1], [2]]
    assert reporter.sent == 2


def test_a_batch_is_cut_by_result_bytes() -> None:
    broker = FakeBroker()
    big = b"x" * (5 * 1024 * 1024)

    async def body(reporter: Reporter) -> None:
        for n in range(3):
            reporter.put(outcome(n, result=big))

    asyncio.run(with_reporter(broker, body))
    assert broker.batches == [[0], [1], [2]]


def test_progress_sends_the_latest_value_not_every_call() -> None:
    broker = FakeBroker()
    claimed = ClaimedTask(
        id=TaskId(b"\x01" * 16), task_type="t", queue="q", attempts=1, max_retries=0,
        lease_token=7, lease_expires_at=0.0, created_at=0.0,
    )  # fmt: skip

    async def main() -> None:
        sender = ProgressSender(broker, asyncio.get_running_loop())
        sink = sender.sink_for(claimed)
        broker.gate.clear()
        sink(1, None)
        await asyncio.sleep(0.01)  # the first PROGRESS is in flight (and stuck)
        for percent in range(2, 100):
            sink(percent, f"at {percent}")
        broker.gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if broker.progress_calls and broker.progress_calls[-1][0] == 99:
                break
        await sender.close()

    asyncio.run(main())
    assert broker.progress_calls == [(1, None), (99, "at 99")]


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(10)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert max(delays[-3:]) >= 0.5
    backoff.reset()
    assert backoff.next() <= 0.1
