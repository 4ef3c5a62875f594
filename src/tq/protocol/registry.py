"""The message registry: type code <-> struct class, the unions, and which reply answers what.

Rules: ``REPLY_TO`` names the one reply type each request expects; a NACK may always come
instead. The unions are what the connection classes and the asyncio shells are typed against.
"""

from __future__ import annotations

from typing import Final, TypeAlias, get_args

from tq.protocol.messages import (
    Ack,
    ActOnFilter,
    ActOnTasks,
    ActReply,
    CancelReply,
    CancelTask,
    ClaimReply,
    ClaimTask,
    ClusterStatusReply,
    DeregisterWorker,
    GetClusterStatus,
    GetStats,
    Heartbeat,
    HeartbeatReply,
    Hello,
    KeyCreate,
    KeyCreateReply,
    KeyList,
    KeyListReply,
    KeyRevoke,
    KeyRevokeReply,
    LimitClear,
    LimitList,
    LimitListReply,
    LimitSet,
    LimitSetReply,
    ListReply,
    ListTasks,
    ListWorkers,
    MessageType,
    Nack,
    Ping,
    Pong,
    Progress,
    QueryStatus,
    QueuePause,
    QueueResume,
    QueueStateReply,
    RegisterReply,
    RegisterWorker,
    ReleaseTasks,
    ResultReply,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleList,
    ScheduleListReply,
    SchedulePause,
    ScheduleReply,
    ScheduleResume,
    StatsReply,
    StatusReply,
    SubmitReply,
    SubmitTask,
    Subscribe,
    TaskEvent,
    TaskResult,
    Unsubscribe,
    Welcome,
    WorkerControl,
    WorkerControlReply,
    WorkerInspect,
    WorkerInspectReply,
    WorkerOrders,
    WorkersReply,
)

_T = MessageType

#: What a client sends.
Request: TypeAlias = (
    Hello | Ping | SubmitTask | ClaimTask | TaskResult | Progress | ReleaseTasks | QueryStatus
    | CancelTask | ListTasks | GetStats | Subscribe | Unsubscribe | ListWorkers
    | RegisterWorker | Heartbeat | DeregisterWorker | KeyCreate | KeyList | KeyRevoke
    | GetClusterStatus | ActOnTasks | ActOnFilter | ScheduleCreate | ScheduleList
    | ScheduleGet | SchedulePause | ScheduleResume | ScheduleDelete | QueuePause | QueueResume
    | LimitSet | LimitClear | LimitList | WorkerInspect | WorkerControl
)  # fmt: skip
#: What the broker sends in answer to a request (always echoing its ``request_id``).
Reply: TypeAlias = (
    Welcome | Ack | Nack | Pong | SubmitReply | ClaimReply | ResultReply | StatusReply
    | CancelReply | ListReply | StatsReply | WorkersReply | RegisterReply | HeartbeatReply
    | KeyCreateReply | KeyListReply | KeyRevokeReply | ClusterStatusReply | ActReply
    | ScheduleReply | ScheduleListReply | QueueStateReply | LimitSetReply | LimitListReply
    | WorkerInspectReply | WorkerControlReply
)  # fmt: skip
#: What the broker sends unasked (no ``request_id``).
Push: TypeAlias = TaskEvent | WorkerOrders
Message: TypeAlias = Request | Reply | Push

REQUEST_CLASSES: Final[tuple[type[Request], ...]] = get_args(Request)
REPLY_CLASSES: Final[tuple[type[Reply], ...]] = get_args(Reply)
PUSH_CLASSES: Final[tuple[type[Push], ...]] = get_args(Push)

MESSAGE_TYPES: Final[dict[int, type[Message]]] = {
    cls.type_code: cls for cls in (*REQUEST_CLASSES, *REPLY_CLASSES, *PUSH_CLASSES)
}
MESSAGE_CODES: Final[dict[type[Message], MessageType]] = {
    cls: cls.type_code for cls in MESSAGE_TYPES.values()
}

#: The reply each request expects (a NACK may always come instead).
REPLY_TO: Final[dict[MessageType, MessageType]] = {
    _T.HELLO: _T.WELCOME,
    _T.PING: _T.PONG,
    _T.SUBMIT_TASK: _T.SUBMIT_REPLY,
    _T.CLAIM_TASK: _T.CLAIM_REPLY,
    _T.TASK_RESULT: _T.RESULT_REPLY,
    _T.PROGRESS: _T.ACK,
    _T.RELEASE_TASKS: _T.ACK,
    _T.QUERY_STATUS: _T.STATUS_REPLY,
    _T.CANCEL_TASK: _T.CANCEL_REPLY,
    _T.LIST_TASKS: _T.LIST_REPLY,
    _T.GET_STATS: _T.STATS_REPLY,
    _T.SUBSCRIBE: _T.ACK,
    _T.UNSUBSCRIBE: _T.ACK,
    _T.LIST_WORKERS: _T.WORKERS_REPLY,
    _T.REGISTER_WORKER: _T.REGISTER_REPLY,
    _T.HEARTBEAT: _T.HEARTBEAT_REPLY,
    _T.DEREGISTER_WORKER: _T.ACK,
    _T.KEY_CREATE: _T.KEY_CREATE_REPLY,
    _T.KEY_LIST: _T.KEY_LIST_REPLY,
    _T.KEY_REVOKE: _T.KEY_REVOKE_REPLY,
    _T.CLUSTER_STATUS: _T.CLUSTER_STATUS_REPLY,
    _T.ACT_ON_TASKS: _T.ACT_REPLY,
    _T.ACT_ON_FILTER: _T.ACT_REPLY,
    _T.SCHEDULE_CREATE: _T.SCHEDULE_REPLY,
    _T.SCHEDULE_LIST: _T.SCHEDULE_LIST_REPLY,
    _T.SCHEDULE_GET: _T.SCHEDULE_REPLY,
    _T.SCHEDULE_PAUSE: _T.SCHEDULE_REPLY,
    _T.SCHEDULE_RESUME: _T.SCHEDULE_REPLY,
    _T.SCHEDULE_DELETE: _T.SCHEDULE_REPLY,
    _T.QUEUE_PAUSE: _T.QUEUE_STATE_REPLY,
    _T.QUEUE_RESUME: _T.QUEUE_STATE_REPLY,
    _T.LIMIT_SET: _T.LIMIT_SET_REPLY,
    _T.LIMIT_CLEAR: _T.ACK,
    _T.LIMIT_LIST: _T.LIMIT_LIST_REPLY,
    _T.WORKER_INSPECT: _T.WORKER_INSPECT_REPLY,
    _T.WORKER_CONTROL: _T.WORKER_CONTROL_REPLY,
}
