"""Faults injected into a 3-node cluster (3 etcd members, 3 brokers on loopback) while a client
submits and two workers run (issue 11, Done when): after each, every acknowledged task is held
once by every live node and completed, leases and results are fenced (tests.cluster.history),
the clients carried on without a restart, and writes were taken again within 5 s. Each test
prints its figures (``-s``): failover_s, write_gap_s (longest time without an acknowledged
submit after the fault) and what the checker counted."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from pathlib import Path

import pytest

from tests.cluster.chaos import Chaos, chaos
from tests.cluster.driver import QUEUE, LeaderDriver
from tests.cluster.history import Claim, Result, Submit, result_bytes
from tq.client import AsyncClient
from tq.cluster.replica import applied_mark
from tq.core.ids import format_task_id
from tq.errors import ErrorCode, NotFoundError, NotLeaderError, TqError, UnavailableError
from tq.protocol import ClaimedTask, TaskOutcome
from tq.storage.rocksdb import RocksStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

#: How long the SIGSTOP lasts: well past the leader's 2 s lease.
PAUSE_S = 5.0
#: How long the leader stays cut off from etcd.
CUT_S = 5.0


def test_kill_9_the_leader_broker(tmp_path: Path) -> None:
    with chaos(tmp_path) as run:
        old = run.warm_up()
        since = time.monotonic()
        run.cluster.kill(old)
        failover = run.failover(since, run.others(old))
        run.progress()
        run.cluster.restart(old)  # it comes back as a follower and catches up
        run.progress()
        run.finish("kill -9 leader broker", since, failover)


def test_kill_9_the_etcd_raft_leader(tmp_path: Path) -> None:
    with chaos(tmp_path) as run:
        run.warm_up()
        member = run.cluster.etcd.raft_leader()
        since = time.monotonic()
        run.cluster.etcd.kill(member)
        failover = run.failover(since)
        run.progress()
        run.cluster.etcd.restart(member)
        run.cluster.etcd.wait_healthy(20.0)
        run.progress()
        run.finish("kill -9 etcd raft leader", since, failover)


def test_kill_9_a_follower_and_bring_it_back_after_the_log_was_trimmed(tmp_path: Path) -> None:
    """While it is down, more entries than the trim keeps are appended and the leader trims
    past what it applied: back, it installs a checkpoint of another node, follows the log
    after it, and ends identical to the others (the checker compares every node)."""
    with chaos(tmp_path) as run:
        leader = run.warm_up()
        follower = run.others(leader)[0]
        since = time.monotonic()
        run.cluster.kill(follower)
        failover = run.failover(since)
        run.progress()
        with RocksStore(run.cluster.brokers[follower].data_dir / "store", read_only=True) as store:
            mark = applied_mark(store).index
        assert mark > 0, "the follower had applied nothing before it was killed"
        run.side.run(_burst(run, BURST), 120.0)  # one entry each: past the 1,000 kept
        run.wait(
            "the log trimmed past the stopped follower",
            lambda: run.side.run(_log_first(run.cluster.urls[leader])) > mark + 1,
            30,
        )
        run.cluster.restart(follower)
        run.wait(
            "the follower installed a checkpoint",
            lambda: "cluster.checkpoint_installed" in run.cluster.log_text(follower),
            60,
        )
        run.progress()
        run.finish(f"kill -9 follower (applied {mark}), trim, restart", since, failover)


#: Submits while a follower is down: more entries than the trim keeps (1,000).
BURST = 1_100


async def _burst(run: Chaos, n: int) -> None:
    """``n`` sequential submits through a client that follows the leader (so each is its
    own log entry), each recorded with its idempotency key as the workload's are."""
    async with AsyncClient(list(run.cluster.urls), request_timeout=10.0) as client:
        for i in range(n):
            rec = run.history.submitted(f"burst-{i}-{uuid.uuid4().hex[:8]}", time.monotonic())
            # Many retries: on a loaded machine the test's slow workers may let a lease lapse
            # more than the default three times while they work through the burst.
            task_id = await client.submit(
                "chaos", b"", queue=QUEUE, idempotency_key=rec.key, max_retries=50
            )
            run.history.acked(rec, task_id)


async def _log_first(url: str) -> int:
    async with AsyncClient(url, request_timeout=5.0) as client:
        return (await client.cluster_status()).log_first_index


def test_sigstop_the_leader_past_its_lease(tmp_path: Path) -> None:
    """A paused leader wakes up deposed: the write and the result that waited in its sockets
    are refused, it steps down, and its worker's result is refused by the new leader too
    once the task was handed out again."""
    with chaos(tmp_path) as run:
        old = run.warm_up()
        url = run.cluster.urls[old]
        slow = AsyncClient(url, request_timeout=20.0, name="tq-chaos-slow", client_kind="worker")
        asked = time.monotonic()
        held = run.side.run(_claim_one(slow), 20.0)
        got = time.monotonic()
        run.history.claimed(
            Claim(format_task_id(held.id), held.lease_token, url, "slow", asked, got)
        )
        # A claim is answered before its entry is committed: wait until a follower holds it.
        follower = run.cluster.urls[run.others(old)[0]]
        run.wait(
            "the claim committed (a follower holds it)",
            lambda: run.side.run(_held_by(follower, held, "slow")),
            10,
        )
        since = time.monotonic()
        run.cluster.stop(old)
        # Sent to the paused leader; they wait in its socket until it runs again.
        stale = run.history.submitted("stale-submit", time.monotonic())
        submit = run.side.spawn(slow.submit("chaos", b"", queue=QUEUE, idempotency_key=stale.key))
        report_sent = time.monotonic()
        report = run.side.spawn(slow.report([_outcome(held)]))
        failover = run.failover(since, run.others(old))
        run.wait(
            "the paused leader's task handed out again",
            lambda: _reclaimed(run, held),
            15,
            lambda: _whereabouts(run, held),
        )
        run.wait("the pause to last its time", lambda: time.monotonic() > since + PAUSE_S, 10)
        run.cluster.cont(old)
        refused = _outcome_of_stale_submit(run, submit, stale, slow, url)
        try:
            code: int | None = report.result(20.0)[0]
        except (NotLeaderError, UnavailableError):
            code = None
        run.history.reported(
            Result(format_task_id(held.id), held.lease_token, slow.url, report_sent, code, True)
        )
        assert code != 0, "a stale result (the deposed leader's lease) was acknowledged"
        run.wait(
            f"n{old} to step down",
            lambda: f"cluster.step_down node=n{old}" in run.cluster.log_text(old),
            10,
        )
        # The same result at the leader: the task was handed out again, so it is stale.
        sent = time.monotonic()
        codes, node, _ = run.side.run(_report_to_leader(run, held), 20.0)
        run.history.reported(
            Result(format_task_id(held.id), held.lease_token, node, sent, codes[0], False)
        )
        # LEASE_MISMATCH while the new claim runs, INVALID_STATE once it completed the task.
        stale_codes = {ErrorCode.LEASE_MISMATCH, ErrorCode.INVALID_STATE}
        assert codes[0] in stale_codes, f"stale result answered {codes[0]}"
        run.side.run(slow.close())
        run.progress()
        run.finish(f"SIGSTOP leader {PAUSE_S:.0f}s then SIGCONT", since, failover)
        print(f"waiting submit: {refused!r} (None: sent on to {slow.url})")  # noqa: T201


def test_partition_the_leader_from_etcd(tmp_path: Path) -> None:
    """The leader loses every etcd member (through proxies it is cut off from) while its
    clients still reach it: a write sent to it then is never acknowledged, another node
    leads, and once healed the old leader follows and ends identical."""
    with chaos(tmp_path, proxied=True) as run:
        old = run.warm_up()
        url = run.cluster.urls[old]
        client = AsyncClient(url, request_timeout=6.0, name="tq-chaos-cut")
        run.side.run(client.connect())
        since = time.monotonic()
        run.cluster.cut(old)
        stale = run.history.submitted("cut-submit", time.monotonic())
        submit = run.side.spawn(client.submit("chaos", b"", queue=QUEUE, idempotency_key=stale.key))
        failover = run.failover(since, run.others(old))
        run.progress()
        refused = _outcome_of_stale_submit(run, submit, stale, client, url)
        run.wait(
            f"n{old} to step down",
            lambda: f"cluster.step_down node=n{old}" in run.cluster.log_text(old),
            10,
        )
        run.wait("the cut to last its time", lambda: time.monotonic() > since + CUT_S, 10)
        run.cluster.heal(old)
        run.side.run(client.close())
        run.progress()
        run.finish(f"leader cut off from etcd {CUT_S:.0f}s", since, failover)
        print(f"cut-off leader's submit: {refused!r} (None: sent on to {client.url})")  # noqa: T201


def test_a_task_whose_submit_was_refused_is_never_handed_out(tmp_path: Path) -> None:
    """NOT_LEADER means not applied: a worker must never run a task its client was told was
    never submitted. A leader just cut off from etcd still takes the submit (its append will
    fail) and, meanwhile, a worker's claim on it."""
    with chaos(tmp_path, proxied=True) as run:
        run.cluster.wait_for_leader(30.0)
        old = run.cluster.leader()
        assert old is not None
        url = run.cluster.urls[old]
        client = AsyncClient(url, request_timeout=6.0, name="tq-chaos-cut")
        worker = AsyncClient(url, request_timeout=6.0, name="tq-chaos-w", client_kind="worker")
        run.side.run(client.connect())
        run.side.run(worker.connect())
        run.cluster.cut(old)
        submit = run.side.spawn(client.submit("chaos", b"x", queue="phantom"))
        # Tasks are handed out only once the claim is committed: this one never is, so the
        # claim is refused (or, the client following a leader, finds nothing).
        claim = run.side.spawn(worker.claim("w", ["phantom"], max_tasks=1, wait=2.0))
        error = claim.exception(20.0)
        claimed = [] if error is not None else claim.result()
        # Refused: NOT_LEADER (never logged) or TIMEOUT (its append was cut short: in doubt,
        # and the task was not handed out either way).
        codes = (ErrorCode.NOT_LEADER, ErrorCode.TIMEOUT)
        assert error is None or getattr(error, "code", None) in codes, error
        with pytest.raises(UnavailableError) as refused:
            submit.result(20.0)
        assert refused.value.code in codes, refused.value
        run.side.run(client.close())
        run.side.run(worker.close())
        assert claimed == [], (
            f"the task of a refused submit was handed out: {claimed} ({refused.value})"
        )


# ---------------------------------------------------------------------- helpers
def _outcome_of_stale_submit(
    run: Chaos,
    submit: concurrent.futures.Future[str],
    stale: Submit,
    client: AsyncClient,
    deposed: str,
) -> Exception | None:
    """A submit sent to a leader about to be deposed: its refusal (None when acknowledged).
    It may only be acknowledged by another node: the deposed one refuses it (not applied),
    and the client, following the leader, sends it on under the same idempotency key."""
    try:
        task_id = submit.result(20.0)
    except (NotLeaderError, UnavailableError) as e:
        return e
    assert client.url != deposed, f"the deposed leader acknowledged a submit ({task_id})"
    run.history.acked(stale, task_id)
    return None


async def _claim_one(client: AsyncClient) -> ClaimedTask:
    """One task claimed by a worker that will not report in time (long polls until then)."""
    while True:
        tasks = await client.claim("slow", [QUEUE], max_tasks=1, wait=1.0)
        if tasks:
            return tasks[0]


def _outcome(task: ClaimedTask) -> TaskOutcome:
    return TaskOutcome(
        task_id=task.id, lease_token=task.lease_token, ok=True,
        result=result_bytes(task.lease_token),
    )  # fmt: skip


def _reclaimed(run: Chaos, held: ClaimedTask) -> bool:
    task_id = format_task_id(held.id)
    return any(c.task_id == task_id and c.token > held.lease_token for c in run.history.claims)


async def _held_by(url: str, held: ClaimedTask, worker_id: str) -> bool:
    async with AsyncClient(url, request_timeout=2.0) as client:
        try:
            task = await client.status(format_task_id(held.id))
        except NotFoundError:
            return False  # not even its submit reached this node yet
    return task.state == "in_progress" and task.worker_id == worker_id


def _whereabouts(run: Chaos, held: ClaimedTask) -> str:
    """The claimed task as each running node holds it (for a failure's message)."""
    task_id = format_task_id(held.id)

    async def status(url: str) -> str:
        async with AsyncClient(url, request_timeout=2.0, reconnect=False) as client:
            try:
                return repr(await client.status(task_id))
            except TqError as e:
                return repr(e)

    live = [u for i, u in enumerate(run.cluster.urls) if i not in run.cluster.paused]
    return f"token {held.lease_token}: " + "; ".join(
        f"{url}: {run.side.run(status(url))}" for url in live
    )


async def _report_to_leader(run: Chaos, held: ClaimedTask) -> tuple[list[int], str, bool]:
    driver = LeaderDriver(run.cluster.urls, "tq-chaos-slow-again", run.history)
    try:
        return await driver.call(lambda c: c.report([_outcome(held)]), time.monotonic() + 15.0)
    finally:
        await driver.close()
