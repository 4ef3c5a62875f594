"""How one execution of a handler ends: control-flow signals and the result record.

A handler ends in one of four ways: it returns (``ok``), raises ``Retry`` or ``Reject`` (a
*decision*, not a fault, kept apart from errors as huey does), or raises anything else (a
fault: retried by the broker with backoff). ``Result`` records that end as plain data; it is
msgspec-encodable because the process pool sends it from child to parent. ``to_outcome``
adds the lease token and becomes the wire ``TaskOutcome``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tq.protocol.records import ClaimedTask, TaskOutcome

#: Longest error text sent to the broker: a traceback-sized message per failed attempt would
#: bloat every stored task and every event, and the worker's log keeps the full story.
MAX_ERROR_LEN: Final = 2000


class ControlFlow(Exception):  # noqa: N818 - a signal, not an error: no "Error" suffix
    """Base of the signals a handler raises to decide its task's fate; not a ``TqError``."""


class Retry(ControlFlow):
    """Ask for another attempt (counts against ``max_retries``).

    ``delay`` is advisory: protocol v1 has no field for it, so the broker's backoff (the task's
    RetrySpec) decides when the retry runs; the delay is quoted in the error text.
    """

    def __init__(self, delay: float | None = None, *, reason: str | None = None) -> None:
        self.delay = delay
        self.reason = reason or "retry requested by the handler"
        super().__init__(self.reason)

    def describe(self) -> str:
        if self.delay is None:
            return self.reason
        return f"{self.reason} (asked for a {self.delay:g}s delay)"


class Reject(ControlFlow):
    """Fail the task for good: no retry, straight to dead_letter with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Result(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The end of one execution, before the lease token is attached."""

    ok: bool
    result: bytes | None = None
    error: str | None = None
    error_type: str | None = None
    retry: bool = True


def bounded(text: str, limit: int = MAX_ERROR_LEN) -> str:
    if len(text) <= limit:
        return text
    marker = f"... ({len(text) - limit} more characters)"
    return text[: max(0, limit - len(marker))] + marker


def succeeded(value: bytes | None) -> Result:
    return Result(ok=True, result=value)


def from_exception(exc: BaseException) -> Result:
    """A handler's exception as a failed attempt; ``Retry``/``Reject`` choose ``retry``."""
    if isinstance(exc, Reject):
        return Result(ok=False, error=bounded(exc.reason), error_type="Reject", retry=False)
    if isinstance(exc, Retry):
        return Result(ok=False, error=bounded(exc.describe()), error_type="Retry", retry=True)
    # ``raise ValueError()`` has an empty str(); the type name alone is still better than "".
    text = str(exc) or type(exc).__qualname__
    return Result(ok=False, error=bounded(text), error_type=type(exc).__qualname__, retry=True)


def timed_out(seconds: float) -> Result:
    return Result(
        ok=False, error=f"timed out after {seconds:g}s", error_type="TimeoutError", retry=True
    )


def missing_handler(task_type: str, registered: list[str]) -> Result:
    """No handler here: retrying on this worker cannot help, so the task is dead-lettered."""
    names = ", ".join(registered) or "none"
    return Result(
        ok=False,
        error=bounded(f"no handler for task type {task_type!r} (registered: {names})"),
        error_type="HandlerNotFound",
        retry=False,
    )


def interrupted(reason: str) -> Result:
    """The worker gave up on a running task (shutdown timeout, crashed child process)."""
    return Result(ok=False, error=bounded(reason), error_type="WorkerInterrupted", retry=True)


def to_outcome(task: ClaimedTask, result: Result) -> TaskOutcome:
    return TaskOutcome(
        task_id=task.id,
        lease_token=task.lease_token,
        ok=result.ok,
        result=result.result,
        error=result.error,
        error_type=result.error_type,
        retry=result.retry,
    )
