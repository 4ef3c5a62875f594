"""Sending what the worker learns back to the broker: outcomes (batched) and progress.

Outcomes: ``Reporter`` sends everything finished so far in one TASK_RESULT. It adds no delay
of its own: while one report is in flight the next batch accumulates, so batches grow with
load (group commit) and a lone task is reported at once. A batch that cannot be sent (broker
restarting) is kept and retried with backoff. An outcome the broker refuses is looked up:
if the task already holds it (a report whose reply was lost with the connection, sent again)
or was cancelled, that is said calmly; otherwise the outcome is lost (LEASE_MISMATCH: the
lease expired, the broker has run or will run the task again), and that is a warning.

Progress: ``ProgressSender`` keeps only the latest value per task and has at most one
PROGRESS in flight per task, so a handler calling ``progress()`` in a tight loop costs a few
requests, not one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Final, Protocol

from tq.core.ids import format_task_id
from tq.core.model import TaskState
from tq.errors import ErrorCode, TqError
from tq.protocol.records import ClaimedTask, TaskInfo, TaskOutcome
from tq.worker.context import ProgressSink
from tq.worker.retrying import Backoff, is_fatal

_log = logging.getLogger(__name__)

MAX_BATCH: Final = 500
#: Result bytes per TASK_RESULT, well below the 16 MiB default frame limit.
MAX_BATCH_BYTES: Final = 8 * 1024 * 1024
#: How long the reporter spends asking the broker what became of refused outcomes.
LOOKUP_TIMEOUT: Final = 2.0


#: What a refused result means for its task, by the broker's per-item code.
_WHY_DROPPED: dict[int, str] = {
    ErrorCode.LEASE_MISMATCH: "lease lost, the broker re-runs it",
    ErrorCode.PAYLOAD_TOO_LARGE: "result above the broker's limit: the task failed",
}


class _ReportClient(Protocol):
    async def report(self, outcomes: list[TaskOutcome]) -> list[int]: ...

    async def status_many(self, ids: list[str]) -> list[TaskInfo | None]: ...


class Reporter:
    """Collects outcomes; ``run`` sends them; ``flush`` waits until all were sent."""

    def __init__(self, client: _ReportClient) -> None:
        self._client = client
        self._pending: list[TaskOutcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.sent = 0
        self.dropped = 0

    def put(self, outcome: TaskOutcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        return self._idle.is_set()

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is left to send; False if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            while not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            # One loop turn: tasks finishing in the same turn join this batch.
            await asyncio.sleep(0)
            batch = self._take()
            try:
                codes = await self._client.report(batch)
            except TqError as exc:
                if is_fatal(exc):
                    await self._isolate(batch, exc)
                    continue
                self._pending[:0] = batch
                delay = backoff.next()
                _log.warning("report.retry outcomes=%d in=%.2fs error=%s", len(batch), delay, exc)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await self._check(batch, codes)

    def _take(self) -> list[TaskOutcome]:
        size = 0
        count = 0
        for outcome in self._pending[:MAX_BATCH]:
            size += len(outcome.result or b"")
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _check(self, batch: list[TaskOutcome], codes: list[int]) -> None:
        refused: list[tuple[TaskOutcome, int]] = []
        for outcome, code in zip(batch, codes, strict=False):
            if code == 0:
                self.sent += 1
            else:
                refused.append((outcome, code))
        if not refused:
            return
        records = await self._lookup([o for o, _ in refused])
        for (outcome, code), info in zip(refused, records or [None] * len(refused), strict=True):
            task = format_task_id(outcome.task_id)
            if info is not None and _holds(info, outcome):
                self.sent += 1  # it reached the broker: the lost reply only hid that
                _log.info("result.already_recorded task=%s state=%s", task, info.state)
                continue
            self.dropped += 1
            if info is not None and info.state == TaskState.CANCELLED:
                _log.info("result.not_needed task=%s reason=cancelled while it ran", task)
                continue
            name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code)
            why = _WHY_DROPPED.get(code, "")
            if info is None and code != ErrorCode.PAYLOAD_TOO_LARGE:
                why = "the broker has no such task now" if records else "(could not look it up)"
            _log.warning("result.dropped task=%s code=%s %s", task, name, why)

    async def _lookup(self, outcomes: list[TaskOutcome]) -> list[TaskInfo | None] | None:
        """The broker's records of ``outcomes``' tasks; None if it cannot say quickly."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                return await self._client.status_many([format_task_id(o.task_id) for o in outcomes])
        except (TqError, TimeoutError) as exc:
            _log.debug("result.lookup_failed outcomes=%d error=%s", len(outcomes), exc)
            return None

    async def _isolate(self, batch: list[TaskOutcome], exc: TqError) -> None:
        """The broker refused the whole report: send outcomes one by one, and turn a refused
        result (too large, say) into a failure naming why, so the task does not hang."""
        _log.error("report.refused outcomes=%d error=%s", len(batch), exc)
        for outcome in batch:
            for attempt in (outcome, _refused(outcome, exc)):
                try:
                    await self._check([attempt], await self._client.report([attempt]))
                except TqError as again:
                    exc = again
                    continue
                break
            else:
                self.dropped += 1
                _log.error("result.dropped task=%s error=%s", format_task_id(outcome.task_id), exc)


def _holds(info: TaskInfo, outcome: TaskOutcome) -> bool:
    """Whether the task's record already shows ``outcome``: completed, or failed (waiting to
    retry, or dead-lettered) with its error."""
    if outcome.ok:
        return info.state == TaskState.COMPLETED
    ended = info.state in (TaskState.FAILED, TaskState.DEAD_LETTER)
    return ended and info.error == outcome.error and info.error_type == outcome.error_type


def _refused(outcome: TaskOutcome, exc: TqError) -> TaskOutcome:
    return TaskOutcome(
        task_id=outcome.task_id,
        lease_token=outcome.lease_token,
        ok=False,
        error=f"the broker refused the outcome: {exc.message}"[:2000],
        error_type=type(exc).__qualname__,
        retry=False,
    )


class _ProgressClient(Protocol):
    def progress(
        self, task_id: bytes, lease_token: int, percent: int, message: str | None = None
    ) -> Awaitable[None]: ...


class ProgressSender:
    """Latest-value-wins progress per task, sent from the event loop."""

    def __init__(self, client: _ProgressClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._latest: dict[bytes, tuple[int, int, str | None]] = {}
        self._senders: dict[bytes, asyncio.Task[None]] = {}

    def sink_for(self, task: ClaimedTask) -> ProgressSink:
        def sink(percent: int, message: str | None) -> None:
            # RuntimeError: the loop is closed, the worker is gone and so is the task's lease.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._offer, task, percent, message)

        return sink

    def _offer(self, task: ClaimedTask, percent: int, message: str | None) -> None:
        self._latest[task.id] = (task.lease_token, percent, message)
        if task.id not in self._senders:
            sender = self._loop.create_task(self._send(task.id))
            self._senders[task.id] = sender

    async def _send(self, task_id: bytes) -> None:
        try:
            while (latest := self._latest.pop(task_id, None)) is not None:
                token, percent, message = latest
                try:
                    await self._client.progress(task_id, token, percent, message)
                except TqError as exc:  # progress is best effort: the outcome is what counts
                    _log.debug("progress.failed task=%s error=%s", format_task_id(task_id), exc)
        finally:
            self._senders.pop(task_id, None)

    def forget(self, task_id: bytes) -> None:
        """The task ended: progress still queued for it would only be refused."""
        self._latest.pop(task_id, None)

    async def close(self) -> None:
        senders = list(self._senders.values())
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
