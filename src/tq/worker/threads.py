"""A small pool of daemon threads whose jobs can be abandoned, for sync handlers.

Why not ``ThreadPoolExecutor``: a Python thread cannot be stopped, so a handler past its
timeout is *abandoned* — its result is ignored and it keeps running until it returns. With
an executor the stuck thread would keep its slot (shrinking the pool for good) and would be
joined at interpreter exit (a stuck handler would hang the worker's exit). Here an abandoned
thread is replaced at once, exits after its job, and is a daemon, so exit never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class _Job(Generic[T]):
    fn: Callable[[], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread | None = None
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class ThreadPool:
    """At most ``size`` jobs run at once; threads start lazily and live until ``shutdown``."""

    def __init__(self, size: int, name: str = "tq-worker") -> None:
        if size < 1:
            raise ValueError(f"thread pool size must be >= 1, got {size}")
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job[object] | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # threads waiting for a job
        self._queued = 0  # jobs not yet taken by a thread
        self._lock = threading.Lock()
        self._serial = 0
        self.abandoned = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a pool thread. If the caller is cancelled (timeout, shutdown) while
        ``fn`` runs, the thread is abandoned and a fresh one takes its place."""
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(fn, loop.create_future(), loop)
        with self._lock:
            self._queued += 1
            self._jobs.put(job)  # type: ignore[arg-type]  # the queue is heterogeneous in T
        self._grow()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    def _grow(self) -> None:
        with self._lock:
            if self._queued <= self._idle or len(self._threads) >= self.size:
                return
            self._serial += 1
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{self._serial}", daemon=True
            )
            self._threads.add(thread)
        thread.start()

    def _abandon(self, job: _Job[T]) -> None:
        with job.lock:
            job.abandoned = True
            stuck = job.thread
        if stuck is not None:
            self.abandoned += 1
            _log.warning(
                "thread.abandoned thread=%s abandoned_total=%d", stuck.name, self.abandoned
            )
            with self._lock:
                # The stuck thread leaves the pool's count now, so a replacement can start.
                self._threads.discard(stuck)
            self._grow()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._queued -= 1
            if job is None:
                break
            with job.lock:
                if job.abandoned:  # cancelled before it started: nothing to run
                    continue
                job.thread = me
            try:
                value = job.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                _call_soon(job.loop, _settle_exc, job.future, exc)
            else:
                _call_soon(job.loop, _settle, job.future, value)
            if _abandoned(job):
                break  # a replacement took this thread's place
        with self._lock:
            self._threads.discard(me)

    def shutdown(self) -> None:
        """Let idle threads exit; running (or abandoned) threads finish their job first."""
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)


def _abandoned(job: _Job[T]) -> bool:
    with job.lock:
        return job.abandoned


class _Inbox:
    """Completions handed from pool threads to one loop, many per wake-up.

    ``call_soon_threadsafe`` per job costs a self-pipe write and a loop wake-up each; under
    load the loop is busy anyway, so later completions join the batch already scheduled.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[tuple[Callable[..., None], tuple[object, ...]]] = deque()
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, fn: Callable[..., None], args: tuple[object, ...]) -> None:
        with self.lock:
            self.items.append((fn, args))
            if self.scheduled:
                return
            self.scheduled = True
        # RuntimeError: the loop closed while an abandoned job ran; nobody waits for it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        with self.lock:
            items = list(self.items)
            self.items.clear()
            self.scheduled = False
        for fn, args in items:
            fn(*args)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    with _inboxes_lock:
        inbox = _inboxes.get(loop)
        if inbox is None:
            inbox = _inboxes[loop] = _Inbox(loop)
    inbox.post(fn, args)


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _settle_exc(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
