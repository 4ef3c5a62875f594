"""Management actions on tasks — cancel, retry from dead letter, delete — on one task, on a
list of ids, or on what a filter selects, with per-task answers worded once for every door.

A bulk action applies in chunks of ``CHUNK`` ids (one command each) and yields to the loop
between chunks and between the listing pages of a filter, so a large call never stalls the
TCP path for long; it answers once every chunk is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from tq.broker.requests import MAX_BULK, Action, BulkResult, ItemResult, ListQuery, TaskFilter
from tq.core.ids import TaskId, format_task_id
from tq.errors import ErrorCode, TqError, ValidationError, error_for_code

if TYPE_CHECKING:
    from tq.broker.service import BrokerService, Durable

CHUNK: Final = 1000  #: ids per command of a bulk action

#: Why a task in the wrong state was left alone, per action ({state}: its state now).
_WRONG_STATE: Final = {
    Action.CANCEL: "it has already finished ({state})",
    Action.RETRY: "only dead_letter tasks can be retried, and it is {state}",
    Action.DELETE: "only finished tasks can be deleted, and it is {state}: cancel it first",
}


def item_message(action: Action, task_id: TaskId, code: int, state: str | None) -> str:
    """The message every door shows for one task an action did not apply to."""
    text = format_task_id(task_id)
    if code == ErrorCode.TASK_NOT_FOUND:
        return f"no task with id {text}"
    if code == ErrorCode.INVALID_STATE and state is not None:
        return f"cannot {action} task {text}: {_WRONG_STATE[action].format(state=state)}"
    try:
        why = ErrorCode(code).description
    except ValueError:
        why = f"error {code}"
    return f"cannot {action} task {text}: {why}"


def _primitive(
    service: BrokerService, action: Action
) -> Callable[[Sequence[TaskId]], tuple[list[int], Durable]]:
    return {
        Action.CANCEL: service.cancel_ids,
        Action.RETRY: service.retry_ids,
        Action.DELETE: service.delete_ids,
    }[action]


async def apply(service: BrokerService, action: Action, ids: Sequence[TaskId]) -> BulkResult:
    """``action`` on each of ``ids`` (duplicates answered once), once durable."""
    if len(ids) > MAX_BULK:
        raise ValidationError(f"{len(ids)} task ids given; at most {MAX_BULK} per call")
    unique = list(dict.fromkeys(ids))
    run = _primitive(service, action)
    codes: list[int] = []
    futures: list[Durable] = []
    for start in range(0, len(unique), CHUNK):
        if start:
            await asyncio.sleep(0)  # let other connections in between chunks
        chunk_codes, fut = run(unique[start : start + CHUNK])
        codes += chunk_codes
        futures.append(fut)
    for fut in dict.fromkeys(futures):
        await service.confirmed(fut)
    return BulkResult([_result(service, action, i, c) for i, c in zip(unique, codes, strict=True)])


def _result(service: BrokerService, action: Action, task_id: TaskId, code: int) -> ItemResult:
    if code == 0:
        return ItemResult(task_id)
    state = None
    if code == ErrorCode.INVALID_STATE:
        info = service.lookup([task_id], False)[0]
        state = None if info is None else info.state
    return ItemResult(task_id, code, item_message(action, task_id, code, state))


async def apply_one(service: BrokerService, action: Action, task_id: TaskId) -> None:
    """``action`` on one task; raises its worded error (NotFoundError, ConflictError...)."""
    result = (await apply(service, action, [task_id])).results[0]
    if not result.ok:
        raise item_error(result)


def item_error(result: ItemResult) -> TqError:
    return error_for_code(result.code, result.message)


async def select(
    service: BrokerService, f: TaskFilter, limit: int, cursor: bytes | None = None
) -> tuple[list[TaskId], bytes | None]:
    """The ids of the first ``limit`` tasks ``f`` matches after ``cursor`` (a listing cursor),
    and the cursor to go on from (None: nothing more matches)."""
    if not 1 <= limit <= MAX_BULK:
        raise ValidationError(f"limit {limit} is outside 1..{MAX_BULK}")
    if f.is_everything:
        raise ValidationError("the filter selects every task: set at least one field")
    ids: list[TaskId] = []
    while True:
        query = ListQuery(f, cursor, min(1000, limit - len(ids)))
        infos, cursor = service.page(query)
        ids += [TaskId(i.id) for i in infos]
        if cursor is None or len(ids) >= limit:
            return ids, cursor
        await asyncio.sleep(0)  # a long selection must not stall the broker's other work


async def apply_filter(
    service: BrokerService,
    action: Action,
    f: TaskFilter,
    limit: int,
    cursor: bytes | None = None,
) -> BulkResult:
    """``action`` on the first ``limit`` tasks ``f`` selects after ``cursor``; ``truncated``
    and ``next_cursor`` if more may match. Going on from ``next_cursor`` ends even when the
    action leaves tasks matching (a retry of tasks not in dead letter): the cursor only
    moves forward, in id order."""
    ids, next_cursor = await select(service, f, limit, cursor)
    result = await apply(service, action, ids)
    return BulkResult(result.results, next_cursor is not None, next_cursor)
