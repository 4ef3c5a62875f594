"""The worker side of the protocol on AsyncClient: one message per method, no policy.

The worker (``tq.worker``) decides when to heartbeat, how long to long-poll and what to retry;
these methods only speak the messages. Task ids stay raw 16 bytes here, as claims carry them.
Each reconnects until its deadline; one lost with its connection is sent again when harmless
(register, heartbeat, progress, release, deregister), never when it holds a lease (claim,
report: ConnectionLostError, and the worker decides). Any of them refused NOT_LEADER (not
applied) is sent to the cluster's leader, claims and reports included.
"""

from __future__ import annotations

from collections.abc import Sequence

from tq.client.session import Session
from tq.client.specs import task_ids as parse_ids
from tq.core.ids import parse_task_id
from tq.protocol import (
    Ack,
    ClaimedTask,
    ClaimReply,
    ClaimTask,
    DeregisterWorker,
    Heartbeat,
    HeartbeatReply,
    Progress,
    RegisterReply,
    RegisterWorker,
    ReleaseTasks,
    ResultReply,
    TaskLease,
    TaskOutcome,
    TaskResult,
)


class WorkerCalls:
    """Mixed into AsyncClient; lease-holding calls (claim, report) are never sent twice."""

    _session: Session

    async def register_worker(
        self,
        worker_id: str,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        hostname: str,
        pid: int,
        pool: str,
        acked: int = 0,
    ) -> RegisterReply:
        """``acked``: the highest order number carried out (``tq.client.control``)."""
        return await self._session.call(
            lambda rid: RegisterWorker(
                request_id=rid, worker_id=worker_id, name=name, queues=list(queues),
                concurrency=concurrency, hostname=hostname, pid=pid, pool=pool, acked=acked,
            ),
            RegisterReply,
            retry=True,
        )  # fmt: skip

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_tasks: int | None = None,
        wait: float = 0.0,
    ) -> list[ClaimedTask]:
        """Claim up to ``max_tasks`` (None: the broker's ``default_claim_batch``); with ``wait``
        > 0 the broker holds the request up to that long for a task to arrive, capped at the
        long poll it advertises (WELCOME ``max_wait_ms``): the reply may come sooner, empty.
        The connection's keepalive PINGs meanwhile, so a long poll never idles it out."""
        wait = max(min(wait, self._session.max_wait), 0.0)
        wait_ms = int(wait * 1000)
        reply = await self._session.call(
            lambda rid: ClaimTask(
                request_id=rid, worker_id=worker_id, queues=list(queues),
                max_tasks=max_tasks, wait_ms=wait_ms,
            ),
            ClaimReply,
            timeout=wait + self._session.request_timeout,
        )  # fmt: skip
        return list(reply.tasks)

    async def report(self, outcomes: Sequence[TaskOutcome]) -> list[int]:
        """Report outcomes; per outcome 0 when applied, else an ErrorCode (LEASE_MISMATCH...)."""
        reply = await self._session.call(
            lambda rid: TaskResult(request_id=rid, results=list(outcomes)), ResultReply
        )
        return list(reply.codes)

    async def heartbeat(
        self,
        worker_id: str,
        *,
        cpu_percent: float,
        memory_rss: int,
        running: Sequence[bytes],
        started: Sequence[bytes] = (),
        draining: bool = False,
        acked: int = 0,
    ) -> HeartbeatReply:
        """``running``: every task held; ``started``: those of them begun (the others are
        reserved); ``draining``: shutting down; ``acked``: the highest order carried out."""
        ids = parse_ids(running, "running")
        begun = parse_ids(started, "started")
        return await self._session.call(
            lambda rid: Heartbeat(
                request_id=rid, worker_id=worker_id, cpu_percent=cpu_percent,
                memory_rss=memory_rss, running=ids, started=begun, draining=draining,
                acked=acked,
            ),
            HeartbeatReply,
            retry=True,
        )  # fmt: skip

    async def progress(
        self, task_id: bytes, lease_token: int, percent: int, message: str | None = None
    ) -> None:
        tid = parse_task_id(task_id)
        await self._session.call(
            lambda rid: Progress(
                request_id=rid, task_id=tid, lease_token=lease_token, percent=percent,
                message=message,
            ),
            Ack,
            retry=True,
        )  # fmt: skip

    async def release(self, worker_id: str, claimed: Sequence[ClaimedTask]) -> None:
        """Hand back claimed tasks that never started; each quotes its claim's lease token, so
        a release arriving after the lease expired cannot free a later claim of the task."""
        leases = [TaskLease(task_id=t.id, lease_token=t.lease_token) for t in claimed]
        await self._session.call(
            lambda rid: ReleaseTasks(request_id=rid, worker_id=worker_id, leases=leases),
            Ack,
            retry=True,
        )

    async def deregister(self, worker_id: str) -> None:
        await self._session.call(
            lambda rid: DeregisterWorker(request_id=rid, worker_id=worker_id), Ack, retry=True
        )
