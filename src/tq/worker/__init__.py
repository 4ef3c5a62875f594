"""tq workers: run task handlers for a broker (claim, execute, report, heartbeat, drain).

``Worker`` is the engine, ``run_worker`` the process entry point (``tq worker MODULE``).
Inside a handler, ``current_task()`` gives the task's context (id, attempt, cancellation
flag, progress); raising ``Retry`` or ``Reject`` decides the task's fate explicitly.
"""

from tq.worker.context import TaskContext, current_task
from tq.worker.main import run_worker
from tq.worker.outcomes import ControlFlow, Reject, Retry
from tq.worker.worker import Worker

__all__ = [
    "ControlFlow",
    "Reject",
    "Retry",
    "TaskContext",
    "Worker",
    "current_task",
    "run_worker",
]
