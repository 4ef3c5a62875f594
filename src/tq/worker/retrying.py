"""Waiting and retrying against a broker that may be restarting: backoff, fatal errors, and
interruptible waits. Every broker call of the worker goes through these rules.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tq.errors import (
    AuthError,
    ConfigError,
    ProtocolError,
    RateLimitedError,
    TqError,
    ValidationError,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")


def is_fatal(exc: BaseException) -> bool:
    """Errors no retry can fix: bad credentials or permissions, a protocol mismatch, a
    request refused as invalid. Everything else (lost connection, broker restarting,
    timeouts, a rate limit: it refills) is transient."""
    if isinstance(exc, RateLimitedError):
        return False
    return isinstance(exc, AuthError | ProtocolError | ValidationError | ConfigError)


class Backoff:
    """Exponential backoff with full jitter: many workers must not reconnect in lockstep."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0


async def best_effort(call: Callable[[], Awaitable[object]], what: str, timeout: float) -> bool:
    """Retry ``call`` on transient errors for up to ``timeout``; log and give up after that.

    For the goodbyes (release, deregister): if they never get through, leases expire and the
    broker reclaims the tasks anyway, only later.
    """
    backoff = Backoff()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await call()
                    return True
                except TqError as exc:
                    if is_fatal(exc):
                        raise
                    await asyncio.sleep(backoff.next())
    except (TqError, TimeoutError) as exc:
        _log.warning("worker.%s_failed error=%s", what, str(exc) or "timed out")
    return False


async def sleep_unless(event: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or less if ``event`` is set meanwhile."""
    try:
        async with asyncio.timeout(delay):
            await event.wait()
    except TimeoutError:
        pass


async def wait_any(*events: asyncio.Event) -> None:
    """Return as soon as one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def unless_stopped(stop: asyncio.Event, call: Coroutine[Any, Any, T]) -> T | None:
    """The result of ``call`` (which never returns None), or None as soon as ``stop`` is set
    first: the call is then cancelled. For calls that may dial a broker that is down for as
    long as their deadline: a stopping worker must not wait that out."""
    task = asyncio.ensure_future(call)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))  # the call has unwound (its connection attempt closed)
        if task.cancelled() or task.exception() is not None:
            return None
    return task.result()  # the call's error, if any, is raised here
