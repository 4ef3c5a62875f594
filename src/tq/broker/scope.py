"""What a queue-scoped API key sees: listings, stats, workers and subscriptions narrowed to
its queues. A request that names another queue is refused by ``access.authorize`` before it
gets here; these narrow what a request that names no queue would show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tq.broker.access import Permission, Principal, authorize
from tq.broker.requests import ListQuery, TaskFilter, Watch
from tq.errors import PermissionDeniedError
from tq.protocol.records import Stats, WorkerInfo


def narrow_filter(who: Principal, f: TaskFilter, permission: Permission) -> TaskFilter:
    """``f`` limited to ``who``'s queues: a filter naming no queue gets the key's one queue;
    a key of several queues must name one of them (a listing follows one queue's index)."""
    if who.queues is None:
        return f
    if f.queue is not None:
        authorize(who, permission, (f.queue,))
        return f
    if len(who.queues) == 1:
        return dataclasses.replace(f, queue=next(iter(who.queues)))
    raise PermissionDeniedError(
        f"{who} is limited to queues {', '.join(sorted(who.queues))}: "
        "name one of them in the filter's queue"
    )


def narrow_query(who: Principal, query: ListQuery) -> ListQuery:
    f = narrow_filter(who, query.filter, Permission.READ)
    return query if f is query.filter else dataclasses.replace(query, filter=f)


def narrow_watch(who: Principal, watch: Watch) -> Watch:
    """Every task of a scoped key is every task of its queues."""
    if who.queues is None or not watch.all:
        return watch
    queues = tuple(dict.fromkeys((*watch.queues, *sorted(who.queues))))
    return dataclasses.replace(watch, queues=queues, all=False)


def narrow_stats(who: Principal, stats: Stats, workers: int) -> Stats:
    """A scoped key's stats: its queues' live counts. The dead-letter count and the lifetime
    totals are broker-wide (not kept per queue), so they are withheld (0 and empty)."""
    if who.queues is None:
        return stats
    queues = {q: d for q, d in stats.queues.items() if q in who.queues}
    return Stats(
        pending=sum(d.high + d.normal + d.low for d in queues.values()),
        scheduled=sum(d.scheduled for d in queues.values()),
        in_progress=sum(d.in_progress for d in queues.values()),
        workers=workers,
        queues=queues,
        uptime=stats.uptime,
        node_id=stats.node_id,
    )


def narrow_workers(who: Principal, workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """The workers serving at least one of a scoped key's queues."""
    if who.queues is None:
        return list(workers)
    scope = who.queues
    return [w for w in workers if any(q in scope for q in w.queues)]
