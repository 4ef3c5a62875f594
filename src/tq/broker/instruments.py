"""What the broker measures for metrics beyond the counters it keeps anyway: fixed-bucket
histograms fed once per request or per batch, read by ``tq.api.metrics`` at scrape time.

The metrics front door installs one ``Instruments`` on the service (``service.instruments``)
and on its group commit (``commit.on_sync``); without it the hot path pays one ``is None``
check per request. Everything here runs on the event-loop thread (the fsync thread hands its
timings to the loop), so nothing locks, and an observation is one bisect and two additions.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from tq.core.model import Task

#: Request latencies that include a group-commit fsync (submit) or are the fsync itself.
DURABLE_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: In-memory request handling (claims): microseconds when healthy.
FAST_LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
#: Handler run times, from claim to result.
PROCESSING_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: Storage mutations made durable by one fsync.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class Histogram:
    """Cumulative-at-read histogram: ``counts[i]`` holds values in (bounds[i-1], bounds[i]]
    (Prometheus' ``le`` is inclusive); the last slot is +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs ending with ``+Inf``, as Prometheus exposes buckets."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class Instruments:
    """The broker's histograms; see ``tq.api.metrics`` for the metric names."""

    def __init__(self) -> None:
        self.submit_latency = Histogram(DURABLE_LATENCY_BUCKETS)
        self.claim_latency = Histogram(FAST_LATENCY_BUCKETS)
        self.processing = {
            "completed": Histogram(PROCESSING_BUCKETS),
            "failed": Histogram(PROCESSING_BUCKETS),
        }
        self.commit_batch = Histogram(BATCH_BUCKETS)
        self.fsync_latency = Histogram(DURABLE_LATENCY_BUCKETS)
        #: A cluster leader's log appends: seconds from sending an entry to etcd's commit.
        self.append_latency = Histogram(DURABLE_LATENCY_BUCKETS)
        self.append_commands = Histogram(BATCH_BUCKETS)
        #: Tasks submitted by schedule firings since this broker started (a plain counter).
        self.schedule_firings = 0

    def on_append(self, seconds: float, commands: int) -> None:
        """``Replicator.on_append``: one log entry of ``commands`` committed in ``seconds``."""
        self.append_latency.observe(seconds)
        self.append_commands.observe(commands)

    def on_sync(self, mutations: int, seconds: float) -> None:
        """``GroupCommit.on_sync``: one fsync made ``mutations`` durable in ``seconds``."""
        self.commit_batch.observe(mutations)
        self.fsync_latency.observe(seconds)

    def finished(
        self, outcome: str, now: float, tasks: Sequence[Task | None], codes: Sequence[int]
    ) -> None:
        """Run times of one report's accepted attempts (code 0), in one pass: ``now`` minus
        each task's ``started_at``."""
        hist = self.processing[outcome]
        counts, bounds, total = hist.counts, hist.bounds, 0.0
        for task, code in zip(tasks, codes, strict=True):
            if code == 0 and task is not None and task.started_at is not None:
                seconds = max(0.0, now - task.started_at)  # the wall clock may step back
                counts[bisect_left(bounds, seconds)] += 1
                total += seconds
        hist.sum += total
