"""The pure core: task model, commands, the broker state machine. No I/O, clock or logging."""

from tq.core.commands import Command, decode_commands, encode_commands
from tq.core.effects import Effects, TaskEvent
from tq.core.ids import TaskId, WorkerId, format_task_id, make_task_id, parse_task_id
from tq.core.machine import Machine
from tq.core.model import PriorityTier, RetryPolicy, Task, TaskState

__all__ = [
    "Command",
    "Effects",
    "Machine",
    "PriorityTier",
    "RetryPolicy",
    "Task",
    "TaskEvent",
    "TaskId",
    "TaskState",
    "WorkerId",
    "decode_commands",
    "encode_commands",
    "format_task_id",
    "make_task_id",
    "parse_task_id",
]
