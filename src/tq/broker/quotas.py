"""Caps on the state a client leaves in the broker, beside its replies: its subscriptions (and
the task ids and queues they follow), its parked long-poll claims, the queues one request
names. One rule for every door, read from ``broker.*`` settings and applied by the service;
a subscriber is whatever the door hands the service as a sink (a TCP connection, a WebSocket,
a gRPC watch stream), the owner of a parked claim its connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tq.broker.events import Following, Subscription
from tq.config import BrokerSettings
from tq.errors import ValidationError

#: Most queues one CLAIM_TASK or REGISTER_WORKER names: a claim walks them all, and a parked
#: claim is indexed under each. The parked claims of one connection, together, name no more.
MAX_REQUEST_QUEUES = 1000


@dataclass(frozen=True, slots=True)
class Quotas:
    subscriptions: int  #: live subscriptions per subscriber
    task_ids: int  #: task ids followed per subscriber, across its subscriptions
    queues: int  #: queues followed per subscriber (a subscription to all counting one)
    parked_claims: int  #: long-poll claims parked per connection

    @classmethod
    def of(cls, b: BrokerSettings) -> Quotas:
        return cls(
            subscriptions=b.max_subscriptions,
            task_ids=b.max_watched_task_ids,
            queues=b.max_watched_queues,
            parked_claims=b.max_parked_claims,
        )

    def may_park(self, parked: tuple[int, int], queues: Sequence[str]) -> bool:
        """May a connection with ``parked`` (claims, queue names they hold) park one more
        claim naming ``queues``? Beyond, the claim is answered at once instead."""
        claims, names = parked
        return claims < self.parked_claims and names + len(queues) <= MAX_REQUEST_QUEUES

    def check_watch(
        self, now: Following, replaced: Subscription | None, task_ids: int, queues: int
    ) -> None:
        """Refuse (ValidationError) a subscription following ``task_ids`` ids and ``queues``
        queues that would take its subscriber past a cap; ``replaced``: the subscription it
        replaces, whose share is given back."""
        subs, ids, qs = now.subscriptions + 1, now.task_ids + task_ids, now.queues + queues
        if replaced is not None:
            subs -= 1
            ids -= len(replaced.task_ids)
            qs -= replaced.queue_count
        for have, cap, what, key in (
            (subs, self.subscriptions, "hold {} subscriptions", "max_subscriptions"),
            (ids, self.task_ids, "follow {} task ids", "max_watched_task_ids"),
            (qs, self.queues, "follow {} queues (all tasks counting one)", "max_watched_queues"),
        ):
            if have > cap:
                raise ValidationError(
                    f"subscribe refused: this connection would {what.format(have)}, more than "
                    f"the {cap} allowed (broker.{key}); unsubscribe some first"
                )


def check_request_queues(queues: Sequence[str]) -> None:
    """The queues one claim or worker registration names: 1..MAX_REQUEST_QUEUES."""
    if not queues:
        raise ValidationError("queues must name at least one queue")
    if len(queues) > MAX_REQUEST_QUEUES:
        raise ValidationError(
            f"queues names {len(queues)} queues, more than the {MAX_REQUEST_QUEUES} one "
            "request may name"
        )
