"""Trimming the replicated log on the leader: which entries every node has applied (from the
membership records), so that deleting them costs no node anything but a node long gone or far
behind, which installs a checkpoint instead. ``trim_point`` decides (pure, time an argument);
``LogTrimmer`` reads etcd, remembers absent nodes, deletes and compacts, every interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tq.cluster.etcd import Etcd
from tq.cluster.log import ReplicatedLog
from tq.cluster.members import read_members
from tq.errors import TqError, ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    """``keep_entries``: the newest entries are never trimmed (a margin for a node that was
    just behind). ``max_lag``: a node more than this many entries behind no longer holds the
    trim back (it installs a checkpoint: ``raft.snapshot_threshold``). ``absent_grace_s``: how
    long a configured node without a live record (restarting, partitioned) still holds it."""

    keep_entries: int = 1_000
    max_lag: int = 10_000
    absent_grace_s: float = 60.0

    def __post_init__(self) -> None:
        if self.keep_entries < 1:
            raise ValidationError(f"trim keep_entries {self.keep_entries}: must be 1 or more")
        if self.max_lag < 1:
            raise ValidationError(f"trim max_lag {self.max_lag}: must be 1 or more")
        if not self.absent_grace_s >= 0:
            raise ValidationError(f"trim absent_grace_s {self.absent_grace_s}: must be >= 0")


@dataclass(frozen=True, slots=True)
class Hold:
    """A node as the trim sees it: what it applied (for an absent node: when last seen) and,
    if it has no live record, for how long it has been absent."""

    node_id: str
    applied_index: int
    absent_for_s: float | None = None  # None: its record is live


@dataclass(frozen=True, slots=True)
class TrimDecision:
    """Delete the entries below ``below`` (0: nothing to trim); ``held_by``: the node that
    set the bound, if any; ``let_go``: nodes left to install a checkpoint."""

    below: int
    held_by: str | None
    let_go: tuple[str, ...]


def trim_point(
    first_index: int, last_index: int, holds: Iterable[Hold], policy: TrimPolicy
) -> TrimDecision:
    """Where to trim a log holding ``first_index..last_index``: below the least applied index
    of the nodes that still hold it (each keeps the entry it applied last, so a checkpoint's
    mark can be checked against the log) and below the newest ``keep_entries``."""
    below = last_index - policy.keep_entries + 1
    held_by: str | None = None
    let_go: list[str] = []
    for hold in sorted(holds, key=lambda h: h.node_id):
        lag = last_index - hold.applied_index
        gone = hold.absent_for_s is not None and hold.absent_for_s > policy.absent_grace_s
        if gone or lag > policy.max_lag:
            let_go.append(hold.node_id)
            continue
        if hold.applied_index < below:
            below, held_by = hold.applied_index, hold.node_id
    if first_index < 1 or below <= first_index:
        return TrimDecision(0, held_by, tuple(let_go))
    return TrimDecision(below, held_by, tuple(let_go))


class LogTrimmer:
    """The leader's trim loop over ``log`` for ``configured`` node ids (``raft.members``).
    A configured node without a live record holds the trim at the index it was last seen at
    (0 if never seen since this trimmer started) for ``policy.absent_grace_s``."""

    def __init__(
        self,
        etcd: Etcd,
        cluster: str,
        log_: ReplicatedLog,
        configured: Iterable[str],
        policy: TrimPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.etcd = etcd
        self.cluster = cluster
        self.log = log_
        self.configured = tuple(configured)
        self.policy = policy or TrimPolicy()
        self.clock = clock
        self._revision = 0  # the etcd revision of the last decision's read
        start = clock()
        # node id -> (applied index, when its record was last seen live)
        self._seen: dict[str, tuple[int, float]] = {n: (0, start) for n in self.configured}

    async def decide(self) -> TrimDecision:
        """Read the records and the log's bounds; the decision (nothing is deleted)."""
        roster = await read_members(self.etcd, self.cluster)
        self._revision = roster.revision
        first = await self.log.first_index()
        last = await self.log.last_index()
        now = self.clock()
        live = {r.node_id: r for r in roster.records}
        for node_id, record in live.items():
            self._seen[node_id] = (record.applied_index, now)
        holds = [
            Hold(node_id, applied, None if node_id in live else now - seen)
            for node_id, (applied, seen) in self._seen.items()
            if node_id in live or node_id in self.configured
        ]
        return trim_point(first, last, holds, self.policy)

    async def run_once(self) -> TrimDecision:
        """Decide and trim; etcd is compacted either way (the membership records' updates
        are history too); the decision taken."""
        decision = await self.decide()
        if not decision.below:
            await self.etcd.compact(self._revision)
        else:
            first = await self.log.trim(decision.below)
            log.info(
                "cluster.log_trimmed below=%d first=%d held_by=%s let_go=%s",
                decision.below,
                first,
                decision.held_by,
                ",".join(decision.let_go) or "-",
            )
        return decision

    async def run(self, interval_s: float) -> None:
        """``run_once`` every ``interval_s`` until cancelled (start it when this node leads,
        cancel it when it stops leading); a failed round is logged and tried next time."""
        if not interval_s > 0:
            raise ValidationError(f"trim interval {interval_s!r}: must be above 0 seconds")
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run_once()
            except TqError as exc:
                log.warning("cluster.log_trim_failed error=%s", exc)
