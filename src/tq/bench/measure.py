"""Pure measurement maths of ``tq bench``: percentiles, latency summaries, rates, pacing.

Nothing here reads a clock or does I/O: times come in as arguments, so every function is
checked with plain numbers. Percentiles are nearest-rank (the value of a real sample, as the
shared peer harness computes them), latencies are reported in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The percentiles every latency summary reports.
PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0..100) of ``values``; None when there are none."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not within 0..100")
    if not values:
        return None
    ordered = sorted(values)
    return _rank(ordered, p)


def _rank(ordered: Sequence[float], p: float) -> float:
    k = math.ceil(p / 100.0 * len(ordered)) - 1
    return ordered[max(0, min(len(ordered) - 1, k))]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency_summary(seconds: Sequence[float], prefix: str = "") -> dict[str, float | int | None]:
    """``{prefix}count``, ``{prefix}p50_ms`` ... ``{prefix}max_ms``, ``{prefix}mean_ms``."""
    ordered = sorted(seconds)
    out: dict[str, float | int | None] = {f"{prefix}count": len(ordered)}
    for p in PERCENTILES:
        value = _rank(ordered, p) * 1000 if ordered else None
        out[f"{prefix}p{p}_ms"] = rounded(value)
    out[f"{prefix}max_ms"] = rounded(ordered[-1] * 1000 if ordered else None)
    out[f"{prefix}mean_ms"] = rounded(sum(ordered) / len(ordered) * 1000 if ordered else None)
    return out


def per_second(count: int, seconds: float | None) -> float | None:
    """``count / seconds`` rounded to 0.1, None when the interval is empty or unknown."""
    if seconds is None or seconds <= 0:
        return None
    return round(count / seconds, 1)


def steady_rate(
    total: int, done_at_first: int, t_first: float | None, t_last: float | None
) -> float | None:
    """Completions per second from the first observed completion to the last, counting only
    those after the first observation (start-up excluded, as the peer harness does)."""
    if t_first is None or t_last is None or t_last <= t_first or total <= done_at_first:
        return None
    return round((total - done_at_first) / (t_last - t_first), 1)


@dataclass(frozen=True)
class Schedule:
    """An open-loop send schedule: send ``k`` is due at ``start + k / rate`` (k = 0, 1, ...),
    for ``duration`` seconds. The sender never waits for replies to keep to it."""

    rate: float
    duration: float
    start: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError(f"rate {self.rate} and duration {self.duration} must be positive")

    @property
    def total(self) -> int:
        """Sends in ``[start, start + duration)``; exact when rate x duration is whole."""
        return max(1, math.ceil(round(self.rate * self.duration, 9)))

    def due(self, k: int) -> float:
        return self.start + k / self.rate

    def due_by(self, now: float) -> int:
        """How many sends are due at ``now`` (at most ``total``): the ``k`` with
        ``due(k) <= now``, the same comparison the sender makes."""
        if now < self.start:
            return 0
        k = math.floor((now - self.start) * self.rate)  # off by one at most: float rounding
        while self.due(k + 1) <= now:
            k += 1
        while k > 0 and self.due(k) > now:
            k -= 1
        return min(self.total, k + 1)


@dataclass
class Meter:
    """A progress counter the hot loops bump (``meter.done += 1``) and a display reads."""

    label: str = ""
    total: int = 0
    done: int = 0

    def reset(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
