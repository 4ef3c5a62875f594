"""What clients and workers saw during a fault test, and the checker that judges it.

The recorder keeps every submit (its idempotency key, and the id once acknowledged), every
claim (task, lease token, node, when sent and received) and every result report (token, the
code the broker answered, or that its outcome is unknown). ``check`` compares that history
with the final state of every live node; each rule is stated where it is checked."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from tq.core.ids import format_task_id
from tq.protocol import TaskInfo

#: ``token >> EPOCH_SHIFT`` is the token's epoch: the number of leaderships that came before.
EPOCH_SHIFT = 40


def epoch(token: int) -> int:
    return token >> EPOCH_SHIFT


@dataclass
class Submit:
    key: str
    sent: float
    task_id: str | None = None  # set once acknowledged
    acked: float | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Claim:
    task_id: str
    token: int
    node: str
    worker: str
    sent: float
    received: float
    key: str = ""  # the task's idempotency key (its payload): which submit it came from


@dataclass(frozen=True)
class Result:
    task_id: str
    token: int
    node: str
    sent: float
    code: int | None  # 0 applied; else the broker's refusal; None: outcome unknown
    uncertain: bool  # an earlier attempt of this report may have been applied


def result_bytes(token: int) -> bytes:
    """What a worker reports as a task's result: the token it held, so the final result says
    which claim's report the cluster kept."""
    return f"token={token}".encode()


@dataclass
class History:
    """Thread-safe: the workload's loop writes while the test's thread reads figures."""

    submits: dict[str, Submit] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    #: Refusals and lost outcomes the clients met, by kind (NOT_LEADER, TIMEOUT...).
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submitted(self, key: str, sent: float) -> Submit:
        with self._lock:
            rec = self.submits[key] = Submit(key, sent)
            return rec

    def acked(self, rec: Submit, task_id: str) -> None:
        with self._lock:
            rec.task_id = task_id
            rec.acked = time.monotonic()

    def claimed(self, claim: Claim) -> None:
        with self._lock:
            self.claims.append(claim)

    def reported(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def acked_submits(self) -> list[Submit]:
        with self._lock:
            return [s for s in self.submits.values() if s.task_id is not None]

    def acked_since(self, since: float) -> int:
        return sum(1 for s in self.acked_submits() if s.acked is not None and s.acked > since)

    def longest_write_gap(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no submit was acknowledged."""
        times = sorted(t for s in self.acked_submits() if (t := s.acked) is not None)
        marks = [start, *(t for t in times if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(marks))


Views = dict[str, dict[str, TaskInfo]]  # node -> task id -> its record there


def check(history: History, views: Views) -> dict[str, int]:
    """Assert the history agrees with the nodes' final ``views``; figures of what was seen."""
    nodes = sorted(views)
    first = views[nodes[0]]
    # Every live node holds the same tasks in the same states (with the same results).
    for node in nodes[1:]:
        view = views[node]
        assert view.keys() == first.keys(), (
            f"{node} and {nodes[0]} hold different tasks: {sorted(view.keys() ^ first.keys())[:5]}"
        )
        differ = [i for i, t in first.items() if _essence(t) != _essence(view[i])]
        assert not differ, (
            f"{node} and {nodes[0]} differ on {len(differ)} tasks, e.g. "
            f"{_essence(first[differ[0]])} vs {_essence(view[differ[0]])}"
        )
    tasks = first
    by_key: dict[str, list[str]] = {}
    for task in tasks.values():
        assert task.idempotency_key is not None, f"task {task.id!r} was not submitted by the test"
        by_key.setdefault(task.idempotency_key, []).append(_id(task))
    # No task the clients never asked for, and none twice (a retried submit counts once).
    unknown = set(by_key) - set(history.submits)
    assert not unknown, f"tasks no client submitted: {sorted(unknown)[:5]}"
    doubled = {k: ids for k, ids in by_key.items() if len(ids) > 1}
    assert not doubled, f"keys present more than once: {doubled}"
    # Every acknowledged submit is present, under the id it was acknowledged with, completed.
    acked = history.acked_submits()
    for sub in acked:
        ids = by_key.get(sub.key)
        assert ids is not None, f"acknowledged task {sub.task_id} (key {sub.key}) is lost"
        assert ids == [sub.task_id], f"key {sub.key} acknowledged as {sub.task_id}, held as {ids}"
        state = tasks[ids[0]].state
        assert state == "completed", f"acknowledged task {sub.task_id} ended {state}"
    _check_claims(history)
    stale, phantom = _check_results(history, tasks)
    return {
        "submitted": len(history.submits),
        "acknowledged": len(acked),
        "held": len(tasks),
        "claims": len(history.claims),
        "results": len(history.results),
        "stale_refused": stale,
        "phantom_results": phantom,
        "epochs": len({epoch(c.token) for c in history.claims}),
    }


def phantoms(history: History, views: Views) -> list[str]:
    """Claims of tasks no node holds, described: handed out from a deposed leader's state
    that never reached the log (see ``_check_results``)."""
    held = next(iter(views.values()))
    acked = {s.key: s.task_id for s in history.acked_submits()}
    return [
        f"{c.worker} got {c.task_id} (key {c.key}, token epoch {epoch(c.token)}) from {c.node}; "
        f"that key's submit was acknowledged as {acked.get(c.key)}"
        for c in history.claims
        if c.task_id not in held
    ]


def _check_claims(history: History) -> None:
    tokens: dict[int, Claim] = {}
    by_epoch: dict[int, set[str]] = {}
    for claim in history.claims:
        # A lease token is handed out once, whichever node hands it out.
        other = tokens.setdefault(claim.token, claim)
        assert other is claim, f"token {claim.token} handed out twice: {other} and {claim}"
        by_epoch.setdefault(epoch(claim.token), set()).add(claim.node)
    # No two nodes hand out leases in the same epoch.
    shared = {e: sorted(n) for e, n in by_epoch.items() if len(n) > 1}
    assert not shared, f"epochs whose leases came from several nodes: {shared}"
    # A claim sent after another claim of the same task was answered carries a later token
    # (so its epoch never goes down); replies delayed by a paused node may arrive late.
    per_task: dict[str, list[Claim]] = {}
    for claim in history.claims:
        per_task.setdefault(claim.task_id, []).append(claim)
    for claims in per_task.values():
        for a in claims:
            for b in claims:
                if b.sent > a.received:
                    assert b.token > a.token, f"claim {b} came after {a} with an older token"


def _check_results(history: History, tasks: dict[str, TaskInfo]) -> tuple[int, int]:
    """A report is applied only with the task's current token; an applied one is kept."""
    claims: dict[str, list[Claim]] = {}
    for claim in history.claims:
        claims.setdefault(claim.task_id, []).append(claim)
    stale = phantom = 0
    for res in history.results:
        task = tasks.get(res.task_id)
        if task is None:
            # Claims are answered before their entry is committed (as a single broker answers
            # them before the fsync): a deposed leader that has not noticed yet hands out tasks
            # of its uncommitted state, e.g. a submit it never acknowledged. Their results
            # can never be applied.
            assert res.code != 0, f"a result was applied to task {res.task_id} no node holds"
            phantom += 1
            continue
        newer = [c for c in claims[res.task_id] if c.token > res.token and c.received < res.sent]
        if newer:
            # The task was handed out again before this report was sent: it is stale.
            assert res.code != 0, f"stale result applied: {res} after the claim {newer[0]}"
            if res.code is not None:
                stale += 1
        if res.code == 0:
            assert task.result == result_bytes(res.token), (
                f"applied result {res} lost: task {res.task_id} holds {task.result!r}"
            )
    for task_id, task in tasks.items():
        if task.result is None:
            continue
        # The result kept came from a report that was applied, or whose outcome is unknown.
        sources = [
            r for r in history.results
            if r.task_id == task_id and result_bytes(r.token) == task.result
        ]  # fmt: skip
        assert any(r.code == 0 or r.code is None or r.uncertain for r in sources), (
            f"task {task_id} kept result {task.result!r} of a refused report: {sources}"
        )
    return stale, phantom


def _id(task: TaskInfo) -> str:
    return format_task_id(task.id)


def _essence(task: TaskInfo) -> tuple[object, ...]:
    return (task.state, task.attempts, task.result, task.idempotency_key)
