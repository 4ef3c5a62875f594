"""The byte budget of ACT_REPLY holds for the worst result the broker can send, and the
protocol's bound on one action is the service's."""

from __future__ import annotations

from tq.broker.requests import MAX_BULK
from tq.core.ids import TaskId
from tq.errors import ErrorCode
from tq.protocol import ACT_ITEM_BYTES, ACT_MESSAGE_MAX, MAX_ACT_TASKS, ActReply, ActResult, encode


def test_the_worst_result_fits_its_share_of_the_reply() -> None:
    worst = ActResult(
        task_id=TaskId(b"\xff" * 16), code=max(ErrorCode), message="m" * ACT_MESSAGE_MAX
    )
    one = len(encode(ActReply(request_id=2**64 - 1, results=[worst])))
    two = len(encode(ActReply(request_id=2**64 - 1, results=[worst, worst])))
    assert two - one <= ACT_ITEM_BYTES


def test_a_reply_of_the_most_tasks_fits_the_budget_the_broker_checks() -> None:
    worst = ActResult(task_id=TaskId(b"\xff" * 16), code=9000, message="m" * ACT_MESSAGE_MAX)
    reply = ActReply(request_id=2**64 - 1, results=[worst] * MAX_ACT_TASKS, next_cursor=b"c" * 64)
    assert len(encode(reply)) <= 1024 + MAX_ACT_TASKS * ACT_ITEM_BYTES


def test_one_action_takes_as_many_tasks_on_the_wire_as_the_service_does() -> None:
    assert MAX_ACT_TASKS == MAX_BULK
