"""The priority aging policy a claim carries, from the broker's settings, and the effective
priority a task's info reports (the rules are ``tq.core.aging``'s; this reads configuration,
which the core never does)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tq.config import BrokerSettings
from tq.core.aging import AgingPolicy, effective_priority
from tq.core.model import Task, TaskState


class Aging:
    """``broker.priority_aging_*`` as claims use it. Off (step 0): every claim carries None
    and costs one call."""

    __slots__ = ("_exempt", "policy")

    def __init__(self, b: BrokerSettings) -> None:
        self._exempt = frozenset(b.priority_aging_exempt_queues)
        #: None while aging is off.
        self.policy: AgingPolicy | None = (
            None
            if b.priority_aging_step == 0
            else AgingPolicy(
                b.priority_aging_interval_s, b.priority_aging_step, b.priority_aging_max
            )
        )

    def for_claim(self, queues: Sequence[str]) -> AgingPolicy | None:
        """The policy a claim of ``queues`` carries: None when aging is off or every queue
        claimed is exempt; else naming the exempt queues among them."""
        policy = self.policy
        if policy is None or not self._exempt:
            return policy
        exempt = tuple(dict.fromkeys(q for q in queues if q in self._exempt))
        if not exempt:
            return policy
        if len(exempt) == len(set(queues)):
            return None
        return msgspec.structs.replace(policy, exempt_queues=exempt)

    def effective(self, task: Task, now: float) -> int | None:
        """The priority a claim would compare ``task`` by now; None unless it is pending."""
        if task.state is not TaskState.PENDING:
            return None
        if task.queue in self._exempt:
            return task.priority
        return effective_priority(task, self.policy, now)
