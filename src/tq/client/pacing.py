"""How long a call may take and how often the client dials: the caller's Deadline, the Backoff.

A call's deadline is the only thing that ends its attempts to reach the broker: the client
retries a refused or lost connection until then, however many attempts that takes. The
Backoff spaces those attempts (capped exponential, equal jitter) and is shared by everything
one client dials for, so many waiting callers make one attempt per step, not one each.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Final, NamedTuple

from tq.errors import ValidationError

#: The first pause after a failed attempt; each failure doubles it up to the Backoff's cap.
FIRST_PAUSE: Final = 0.05


class Deadline(NamedTuple):
    """The loop time a caller stops waiting at (``at``; None: never), from ``seconds`` given.

    A tuple rather than a dataclass: every call makes one, and this is the cheap kind."""

    at: float | None
    seconds: float | None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """``seconds`` from now on the running loop; None or infinity: no deadline."""
        if seconds is None or seconds == math.inf:
            return cls(None, None)
        if not isinstance(seconds, (int, float)) or not seconds >= 0:  # NaN fails too
            raise ValidationError(f"timeout must be a number of seconds >= 0, got {seconds!r}")
        return cls(asyncio.get_running_loop().time() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left (0 once passed, infinity without a deadline)."""
        if self.at is None:
            return math.inf
        return max(self.at - asyncio.get_running_loop().time(), 0.0)

    @property
    def passed(self) -> bool:
        return self.at is not None and self.at <= asyncio.get_running_loop().time()

    def bound(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first: the timeout of one step."""
        return min(seconds, self.remaining())

    def describe(self) -> str:
        return "without a deadline" if self.seconds is None else f"within {self.seconds:g} s"


def latest(deadlines: list[Deadline]) -> Deadline:
    """The deadline that passes last (no deadline beats any)."""
    return max(deadlines, key=lambda d: math.inf if d.at is None else d.at)


class Backoff:
    """When the next connection attempt may start: after a failure, a pause drawn from
    [p/2, p] (equal jitter: never a tight loop, never in lockstep with other clients), where
    p doubles per failure from FIRST_PAUSE up to ``cap``; a success starts over."""

    def __init__(self, cap: float) -> None:
        if not cap > 0:
            raise ValidationError(f"max_reconnect_delay must be > 0 seconds, got {cap!r}")
        self.cap = cap
        self._pause = min(FIRST_PAUSE, cap)
        #: Loop time before which no attempt starts.
        self.next_attempt = 0.0
        #: Failed attempts since the last success.
        self.failures = 0

    def failed(self) -> float:
        """Record a failed attempt; returns the pause before the next one."""
        pause = random.uniform(self._pause / 2, self._pause)
        self.next_attempt = asyncio.get_running_loop().time() + pause
        self._pause = min(self._pause * 2, self.cap)
        self.failures += 1
        return pause

    def succeeded(self) -> None:
        self._pause = min(FIRST_PAUSE, self.cap)
        self.next_attempt = 0.0
        self.failures = 0

    def wait(self) -> float:
        """Seconds until the next attempt may start (0: now)."""
        return max(self.next_attempt - asyncio.get_running_loop().time(), 0.0)
