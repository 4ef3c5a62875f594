"""Replies of the state machine to commands: snapshots, safe to encode after later commands."""

from __future__ import annotations

import msgspec

from tq.core.control import WorkerOrder
from tq.core.ids import TaskId


class SubmitReply(msgspec.Struct, frozen=True):
    ids: list[TaskId]
    created: list[bool]  # False: an idempotency-key duplicate; the existing id is returned


class ClaimedTask(msgspec.Struct, frozen=True, gc=False):
    id: TaskId
    task_type: str
    queue: str
    payload: bytes
    priority: int
    attempts: int
    max_retries: int
    timeout: float | None
    lease_token: int
    lease_expires_at: float
    created_at: float
    tags: dict[str, str]


class ClaimReply(msgspec.Struct, frozen=True):
    tasks: list[ClaimedTask]


class ItemCodes(msgspec.Struct, frozen=True):
    """One code per item of a batch command: 0 applied, else a tq.errors.ErrorCode value."""

    codes: list[int]


class HeartbeatReply(msgspec.Struct, frozen=True):
    lease_expires_at: float
    #: ids the worker reports running but no longer holds (cancelled, expired, reassigned).
    unknown: list[TaskId]
    #: Orders the worker has not acknowledged yet (repeated until it does).
    orders: tuple[WorkerOrder, ...] = ()


class OrdersReply(msgspec.Struct, frozen=True):
    """A worker's orders not acknowledged yet (``pending``, oldest first), after an order was
    given (``order``; None: it would change nothing, the worker does so already or is ordered
    to) or after the worker registered (``order`` None)."""

    order: WorkerOrder | None
    pending: tuple[WorkerOrder, ...]


class Affected(msgspec.Struct, frozen=True):
    """Ids of the tasks a maintenance command acted on."""

    task_ids: list[TaskId]


class Done(msgspec.Struct, frozen=True):
    """Applied; nothing to report."""


DONE = Done()

Reply = SubmitReply | ClaimReply | ItemCodes | HeartbeatReply | Affected | Done | OrdersReply
