"""Management actions on AsyncClient: retry, delete and cancel tasks by id or by filter.

Ids go in runs of one ACT_ON_TASKS each (at most 10,000, fewer when the reply could pass
the frame limit); a filter goes page by page (ACT_ON_FILTER), each page going on from the
broker's cursor until it has none, so a selection the action leaves matching (a retry of tasks
not in dead letter) still ends, each task acted on once. Per-task results carry the broker's
own wording. None of these calls is sent again after a lost connection: its outcome is
unknown (ConnectionLostError; a page already done stays done).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tq.client.session import Session
from tq.client.specs import task_ids as parse_ids
from tq.core.ids import TaskId, format_task_id
from tq.core.model import TaskState
from tq.errors import TqError, ValidationError, error_for_code
from tq.protocol import (
    ACT_ITEM_BYTES,
    MAX_ACT_TASKS,
    ActionName,
    ActOnFilter,
    ActOnTasks,
    ActReply,
)

#: What the broker keeps of a reply's frame besides its per-task results (docs/protocol.md,
#: "Reply sizes"), and what a request's frame holds besides its ids.
_REPLY_OVERHEAD: Final = 1024
_REQUEST_OVERHEAD: Final = 64
_REQUEST_PER_ID: Final = 19  # a 16-byte id as bin 8, with room to spare


@dataclass(frozen=True, slots=True)
class ActionResult:
    """One task's answer to an action: ``code`` 0 when applied, else an ErrorCode with the
    broker's ``message`` (``cannot retry task ...: only dead_letter tasks can be retried,
    and it is pending``)."""

    task_id: str
    code: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def error(self) -> TqError | None:
        """The error this result stands for (NotFoundError, ConflictError...), None if ok."""
        return None if self.ok else error_for_code(self.code, self.message)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Tasks matching every given field, as ``list_tasks`` takes them (priorities inclusive,
    ``created_after`` inclusive and ``created_before`` exclusive, unix seconds). A bulk
    action needs at least one field that narrows the selection."""

    state: str | None = None
    queue: str | None = None
    task_type: str | None = None
    priority_min: int | None = None
    priority_max: int | None = None
    created_after: float | None = None
    created_before: float | None = None

    def task_state(self) -> TaskState | None:
        try:
            return None if self.state is None else TaskState(self.state)
        except ValueError:
            states = ", ".join(TaskState)
            raise ValidationError(f"state {self.state!r} is not one of {states}") from None

    def describe(self) -> str:
        """``queue=emails, state=dead_letter``: the fields set, for messages and prompts."""
        names = ("state", "queue", "task_type", "priority_min", "priority_max",
                 "created_after", "created_before")  # fmt: skip
        return ", ".join(f"{n}={getattr(self, n)}" for n in names if getattr(self, n) is not None)


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """Where a bulk action stands, after each call: tasks it applied to and did not, so far."""

    action: str
    applied: int
    failed: int
    calls: int
    done: bool


@dataclass(slots=True)
class BulkOutcome:
    """What a bulk action did: the ids it applied to, in order, and the results of the rest."""

    action: str
    applied: list[str] = field(default_factory=list)
    failed: list[ActionResult] = field(default_factory=list)
    calls: int = 0

    def add(self, results: Sequence[ActionResult]) -> None:
        self.calls += 1
        for r in results:
            if r.ok:
                self.applied.append(r.task_id)
            else:
                self.failed.append(r)

    def progress(self, done: bool) -> BulkProgress:
        return BulkProgress(self.action, len(self.applied), len(self.failed), self.calls, done)


#: Called after each call of a bulk action (on the client's event loop thread).
ProgressCallback = Callable[[BulkProgress], None]


def _results(reply: ActReply) -> list[ActionResult]:
    return [ActionResult(format_task_id(r.task_id), r.code, r.message) for r in reply.results]


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_ACT_TASKS:
        raise ValidationError(f"page_size {page_size} is outside 1..{MAX_ACT_TASKS}")


def _on_tasks(action: ActionName, ids: list[TaskId]) -> Callable[[int], ActOnTasks]:
    return lambda rid: ActOnTasks(request_id=rid, action=action, task_ids=ids)


def _on_filter(
    action: ActionName, where: TaskFilter, cursor: bytes | None, limit: int
) -> Callable[[int], ActOnFilter]:
    return lambda rid: ActOnFilter(
        request_id=rid, action=action, state=where.task_state(), queue=where.queue,
        task_type=where.task_type, priority_min=where.priority_min,
        priority_max=where.priority_max, created_after=where.created_after,
        created_before=where.created_before, cursor=cursor, limit=limit,
    )  # fmt: skip


class BulkCalls:
    """Mixed into AsyncClient: retry and delete by id, and every action by filter."""

    _session: Session

    async def retry(self, task_id: str) -> None:
        """Requeue a dead-lettered task; NotFoundError, or ConflictError (INVALID_STATE)
        when it is not in dead letter."""
        await self._act_one("retry", task_id)

    async def retry_many(
        self,
        ids: Sequence[str],
        *,
        page_size: int = MAX_ACT_TASKS,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """Requeue dead-lettered tasks; one result per id (a repeated id answered once),
        ``page_size`` ids per call at most."""
        return await self._act_many("retry", ids, page_size, progress)

    async def delete(self, task_id: str) -> None:
        """Delete a finished task (completed, dead_letter, cancelled) for good; NotFoundError,
        or ConflictError (INVALID_STATE) when it is live (cancel it first)."""
        await self._act_one("delete", task_id)

    async def delete_many(
        self,
        ids: Sequence[str],
        *,
        page_size: int = MAX_ACT_TASKS,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """Delete finished tasks; one result per id (a repeated id answered once),
        ``page_size`` ids per call at most."""
        return await self._act_many("delete", ids, page_size, progress)

    async def retry_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        """Requeue every dead-lettered task ``where`` selects, page by page."""
        return await self._act_where("retry", where, page_size, progress)

    async def delete_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        """Delete every finished task ``where`` selects, page by page."""
        return await self._act_where("delete", where, page_size, progress)

    async def cancel_where(
        self,
        where: TaskFilter,
        *,
        page_size: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> BulkOutcome:
        """Cancel every unfinished task ``where`` selects, page by page."""
        return await self._act_where("cancel", where, page_size, progress)

    async def _act_one(self, action: ActionName, task_id: str) -> None:
        (result,) = await self._act_many(action, [task_id], 1, None)
        if result.error is not None:
            raise result.error

    async def _per_call(self) -> int:
        """Most tasks one call may name or select: its reply must fit our frame limit and
        its ids the broker's."""
        session = self._session
        conn = await session.connection(session.deadline())
        by_reply = (conn.reply_frame_size - _REPLY_OVERHEAD) // ACT_ITEM_BYTES
        by_request = (conn.max_frame_size - _REQUEST_OVERHEAD) // _REQUEST_PER_ID
        return max(1, min(MAX_ACT_TASKS, by_reply, by_request))

    async def _act_many(
        self,
        action: ActionName,
        ids: Sequence[str],
        page_size: int,
        progress: ProgressCallback | None,
    ) -> list[ActionResult]:
        _check_page_size(page_size)
        unique = list(dict.fromkeys(parse_ids(ids)))
        run = min(page_size, await self._per_call())
        outcome = BulkOutcome(action)
        results: list[ActionResult] = []
        for start in range(0, len(unique), run):
            reply = await self._session.call(
                _on_tasks(action, unique[start : start + run]), ActReply
            )
            page = _results(reply)
            results += page
            outcome.add(page)
            if progress is not None:
                progress(outcome.progress(start + run >= len(unique)))
        return results

    async def _act_where(
        self,
        action: ActionName,
        where: TaskFilter,
        page_size: int,
        progress: ProgressCallback | None,
    ) -> BulkOutcome:
        _check_page_size(page_size)
        where.task_state()  # a bad state is refused before anything is sent
        limit = min(page_size, await self._per_call())
        outcome = BulkOutcome(action)
        cursor: bytes | None = None
        while True:
            reply = await self._session.call(_on_filter(action, where, cursor, limit), ActReply)
            outcome.add(_results(reply))
            cursor = reply.next_cursor
            if progress is not None:
                progress(outcome.progress(cursor is None))
            if cursor is None:
                return outcome
