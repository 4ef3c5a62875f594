"""The running task's context, reachable from inside a handler with ``current_task()``.

A context carries the task's identity, a ``cancelled`` flag set when the broker reports the
task cancelled (or its lease lost), and ``progress()``. It lives in a ``ContextVar`` so that
asyncio tasks, pool threads and process-pool children each see their own task. The
transport behind ``progress`` is injected: the parent's client, or the child's pipe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from tq.core.ids import format_task_id

#: Sends (percent, message) for this task; must not block and may be called from any thread.
ProgressSink = Callable[[int, "str | None"], None]

_current: ContextVar[TaskContext] = ContextVar("tq_current_task")


def _discard(percent: int, message: str | None) -> None:
    del percent, message


@dataclass(eq=False)
class TaskContext:
    """What a handler may know about, and tell about, the task it is running."""

    raw_id: bytes
    task_type: str
    queue: str
    attempt: int
    max_retries: int
    _sink: ProgressSink = field(default=_discard, repr=False)
    # An Event, not a bool: the flag is set on the event loop thread and read from pool
    # threads, and an Event also lets a sync handler *wait* on cancellation.
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def id(self) -> str:
        """The task id in canonical UUID text form."""
        return format_task_id(self.raw_id)

    @property
    def cancelled(self) -> bool:
        """True once the broker said this task was cancelled or its lease lost: stop soon."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (sync handlers) until cancelled or ``timeout``; the flag's value."""
        return self._cancel.wait(timeout)

    def cancel(self) -> None:
        self._cancel.set()

    def progress(self, percent: int, message: str | None = None) -> None:
        """Report 0-100 percent done; sent in the background, later calls supersede earlier."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be 0..100, got {percent}")
        self._sink(percent, message)


def current_task() -> TaskContext:
    """The context of the task running in this asyncio task, thread or child process."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "tq.worker.current_task() called outside a task run by a tq worker"
        ) from None


@contextmanager
def activated(ctx: TaskContext) -> Iterator[TaskContext]:
    """Make ``ctx`` the current task for the calling thread or asyncio task."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
