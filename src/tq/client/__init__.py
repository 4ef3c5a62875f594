"""tq's client: ``AsyncClient``, the blocking ``Client`` facade, and the ``@task`` API.

Imports no server code: it speaks the wire protocol (``tq.protocol``) over TCP to a broker,
or to the nodes of a cluster, following their leader (``tq.client.session``).
"""

from tq.client.bulk import ActionResult, BulkOutcome, BulkProgress, TaskFilter
from tq.client.client import AsyncClient, task_outcome
from tq.client.connection import ConnectionLostError
from tq.client.control import WorkerDetail
from tq.client.defaults import set_default_client
from tq.client.handle import AsyncTaskHandle, TaskHandle
from tq.client.periodic import periodic
from tq.client.schedules import schedule_spec
from tq.client.specs import SubmitOptions, task_spec
from tq.client.subscription import Subscription
from tq.client.sync import Client, SyncSubscription
from tq.client.task import (
    AsyncTaskFunction,
    RawHandler,
    SyncTaskFunction,
    TaskFunction,
    handler,
    task,
)
from tq.client.tls import TlsConfig
from tq.protocol import (
    ClaimedTask,
    HeartbeatReply,
    RegisterReply,
    RetrySpec,
    Stats,
    TaskEvent,
    TaskInfo,
    TaskOutcome,
    TaskSpec,
    WorkerInfo,
    WorkerOrderInfo,
)

__all__ = [
    "ActionResult",
    "AsyncClient",
    "AsyncTaskFunction",
    "AsyncTaskHandle",
    "BulkOutcome",
    "BulkProgress",
    "ClaimedTask",
    "Client",
    "ConnectionLostError",
    "HeartbeatReply",
    "RawHandler",
    "RegisterReply",
    "RetrySpec",
    "Stats",
    "SubmitOptions",
    "Subscription",
    "SyncSubscription",
    "SyncTaskFunction",
    "TaskEvent",
    "TaskFilter",
    "TaskFunction",
    "TaskHandle",
    "TaskInfo",
    "TaskOutcome",
    "TaskSpec",
    "TlsConfig",
    "WorkerDetail",
    "WorkerInfo",
    "WorkerOrderInfo",
    "handler",
    "periodic",
    "schedule_spec",
    "set_default_client",
    "task",
    "task_outcome",
    "task_spec",
]
