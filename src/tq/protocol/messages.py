"""Every protocol message as a typed struct, with its normative type code.

Rules: a message is a ``WireStruct`` (see ``records``) with a ``type_code`` class attribute.
Every message but TASK_EVENT carries ``request_id``; a reply echoes the id of its request.
Codes and field names are wire contracts: never renumber or rename, only append.
"""

# msgspec copies a mutable default ([] or {}) for each instance; RUF012 only knows that of
# direct Struct subclasses.
# ruff: noqa: RUF012

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, ClassVar, Final, Literal

from msgspec import Meta

from tq.core.model import TaskState
from tq.protocol.records import (
    ActResult,
    ClaimedTask,
    ClusterStatus,
    Count,
    CpuPercent,
    KeyInfo,
    KeySpec,
    LimitInfo,
    LimitScope,
    LimitSpec,
    Name,
    OrderActionName,
    Percent,
    PositiveSeconds,
    Priority,
    QueueState,
    RequestId,
    ScheduleInfo,
    ScheduleName,
    ScheduleSpec,
    Seconds,
    ShortText,
    Stats,
    TaskIdBytes,
    TaskInfo,
    TaskLease,
    TaskOutcome,
    TaskSpec,
    Timestamp,
    WireStruct,
    WorkerInfo,
    WorkerOrderInfo,
)


class MessageType(IntEnum):
    """The type byte of a frame."""

    HELLO = 0x01
    WELCOME = 0x02
    ACK = 0x03
    NACK = 0x04
    PING = 0x05
    PONG = 0x06
    SUBMIT_TASK = 0x10
    SUBMIT_REPLY = 0x11
    CLAIM_TASK = 0x12
    CLAIM_REPLY = 0x13
    TASK_RESULT = 0x14
    RESULT_REPLY = 0x15
    PROGRESS = 0x16
    RELEASE_TASKS = 0x17
    QUERY_STATUS = 0x20
    STATUS_REPLY = 0x21
    CANCEL_TASK = 0x22
    CANCEL_REPLY = 0x23
    LIST_TASKS = 0x24
    LIST_REPLY = 0x25
    GET_STATS = 0x26
    STATS_REPLY = 0x27
    SUBSCRIBE = 0x28
    TASK_EVENT = 0x29
    UNSUBSCRIBE = 0x2A
    LIST_WORKERS = 0x2B
    WORKERS_REPLY = 0x2C
    REGISTER_WORKER = 0x30
    REGISTER_REPLY = 0x31
    HEARTBEAT = 0x32
    HEARTBEAT_REPLY = 0x33
    DEREGISTER_WORKER = 0x34
    KEY_CREATE = 0x40
    KEY_CREATE_REPLY = 0x41
    KEY_LIST = 0x42
    KEY_LIST_REPLY = 0x43
    KEY_REVOKE = 0x44
    KEY_REVOKE_REPLY = 0x45
    CLUSTER_STATUS = 0x50
    CLUSTER_STATUS_REPLY = 0x51
    ACT_ON_TASKS = 0x60
    ACT_ON_FILTER = 0x61
    ACT_REPLY = 0x62
    SCHEDULE_CREATE = 0x70
    SCHEDULE_REPLY = 0x71
    SCHEDULE_LIST = 0x72
    SCHEDULE_LIST_REPLY = 0x73
    SCHEDULE_GET = 0x74
    SCHEDULE_PAUSE = 0x75
    SCHEDULE_RESUME = 0x76
    SCHEDULE_DELETE = 0x77
    QUEUE_PAUSE = 0x80
    QUEUE_STATE_REPLY = 0x81
    QUEUE_RESUME = 0x82
    LIMIT_SET = 0x83
    LIMIT_SET_REPLY = 0x84
    LIMIT_CLEAR = 0x85
    LIMIT_LIST = 0x86
    LIMIT_LIST_REPLY = 0x87
    WORKER_INSPECT = 0x90
    WORKER_INSPECT_REPLY = 0x91
    WORKER_CONTROL = 0x92
    WORKER_CONTROL_REPLY = 0x93
    WORKER_ORDERS = 0x94


#: The protocol's default idle timeout (seconds) and long-poll cap (ms): what a WELCOME that
#: omits ``idle_timeout`` / ``max_wait_ms`` means.
IDLE_TIMEOUT: Final = 30.0
MAX_WAIT_MS: Final = 30_000

_T = MessageType
TaskIds = list[TaskIdBytes]
Codes = list[Annotated[int, Meta(ge=0)]]


class _Correlated(WireStruct, kw_only=True, frozen=True):
    type_code: ClassVar[MessageType]
    request_id: RequestId


# --- connection ----------------------------------------------------------------------------


#: The smallest frame limit a client may state in HELLO: room for any event or small reply.
MIN_CLIENT_FRAME_SIZE: Final = 64 * 1024


class Hello(_Correlated, kw_only=True, frozen=True):
    """``max_frame_size``: the largest frame N the client accepts (None: the broker's own
    limit); the broker sends nothing larger."""

    type_code = _T.HELLO
    versions: Annotated[list[Annotated[int, Meta(ge=0, le=0xFFFF)]], Meta(max_length=64)]
    client_name: ShortText = ""
    client_kind: Literal["client", "worker"] = "client"
    api_key: ShortText | None = None
    max_frame_size: Annotated[int, Meta(ge=MIN_CLIENT_FRAME_SIZE, le=0xFFFFFFFF)] | None = None


class Welcome(_Correlated, kw_only=True, frozen=True):
    """``idle_timeout``: the broker closes a connection silent (no complete frame) this long;
    ``max_wait_ms``: the longest CLAIM_TASK ``wait_ms`` it honours. Both default to the
    protocol's 30 s, so a WELCOME that omits them (an older broker) means exactly that."""

    type_code = _T.WELCOME
    version: Annotated[int, Meta(ge=0, le=0xFFFF)]
    server_name: str = ""
    node_id: str = ""
    max_frame_size: Annotated[int, Meta(ge=1, le=0xFFFFFFFF)]
    heartbeat_interval: PositiveSeconds
    lease_duration: PositiveSeconds
    idle_timeout: PositiveSeconds = IDLE_TIMEOUT
    max_wait_ms: Count = MAX_WAIT_MS


class Ack(_Correlated, kw_only=True, frozen=True):
    type_code = _T.ACK


class Nack(_Correlated, kw_only=True, frozen=True):
    """``code`` is a ``tq.errors.ErrorCode`` kept as int: a newer broker may send new codes."""

    type_code = _T.NACK
    code: Count
    message: str = ""
    #: RATE_LIMITED: seconds until the same request would be allowed.
    retry_after: Seconds | None = None
    #: NOT_LEADER: ``host:port`` of the node that leads now (its TCP door), if one is known.
    leader: ShortText | None = None


class Ping(_Correlated, kw_only=True, frozen=True):
    type_code = _T.PING


class Pong(_Correlated, kw_only=True, frozen=True):
    type_code = _T.PONG


# --- producing and executing tasks ---------------------------------------------------------


class SubmitTask(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SUBMIT_TASK
    tasks: list[TaskSpec]


class SubmitReply(_Correlated, kw_only=True, frozen=True):
    """``ids[i]``/``created[i]`` answer ``tasks[i]``; created False: idempotent duplicate."""

    type_code = _T.SUBMIT_REPLY
    ids: TaskIds
    created: list[bool]


class ClaimTask(_Correlated, kw_only=True, frozen=True):
    type_code = _T.CLAIM_TASK
    worker_id: Name
    queues: Annotated[list[Name], Meta(min_length=1)]
    #: Omitted (or nil): the broker's default claim batch (broker.default_claim_batch, 10).
    max_tasks: Annotated[int, Meta(ge=1, le=1000)] | None = None
    wait_ms: Count = 0


class ClaimReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.CLAIM_REPLY
    tasks: list[ClaimedTask] = []


class TaskResult(_Correlated, kw_only=True, frozen=True):
    type_code = _T.TASK_RESULT
    results: list[TaskOutcome]


class ResultReply(_Correlated, kw_only=True, frozen=True):
    """``codes[i]`` answers ``results[i]``: 0 applied, else an ErrorCode (LEASE_MISMATCH...)."""

    type_code = _T.RESULT_REPLY
    codes: Codes


class Progress(_Correlated, kw_only=True, frozen=True):
    type_code = _T.PROGRESS
    task_id: TaskIdBytes
    lease_token: Count
    percent: Percent
    message: str | None = None


class ReleaseTasks(_Correlated, kw_only=True, frozen=True):
    """Claims handed back unstarted; one whose lease is no longer current is ignored."""

    type_code = _T.RELEASE_TASKS
    worker_id: Name
    leases: list[TaskLease]


# --- inspecting and managing tasks ---------------------------------------------------------


class QueryStatus(_Correlated, kw_only=True, frozen=True):
    type_code = _T.QUERY_STATUS
    task_ids: TaskIds
    include_payload: bool = False


class StatusReply(_Correlated, kw_only=True, frozen=True):
    """``tasks[i]`` answers ``task_ids[i]``; None: no such task."""

    type_code = _T.STATUS_REPLY
    tasks: list[TaskInfo | None]


class CancelTask(_Correlated, kw_only=True, frozen=True):
    type_code = _T.CANCEL_TASK
    task_ids: TaskIds


class CancelReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.CANCEL_REPLY
    codes: Codes


class ListTasks(_Correlated, kw_only=True, frozen=True):
    """Filters are ANDed; ``cursor`` is the opaque ``next_cursor`` of the previous page."""

    type_code = _T.LIST_TASKS
    state: TaskState | None = None
    queue: Name | None = None
    task_type: Name | None = None
    priority_min: Priority | None = None
    priority_max: Priority | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    cursor: bytes | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


class ListReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIST_REPLY
    tasks: list[TaskInfo] = []
    next_cursor: bytes | None = None


class GetStats(_Correlated, kw_only=True, frozen=True):
    type_code = _T.GET_STATS


class StatsReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.STATS_REPLY
    stats: Stats


class Subscribe(_Correlated, kw_only=True, frozen=True):
    """Events for the union of ``task_ids``, ``queues`` or everything (``all``)."""

    type_code = _T.SUBSCRIBE
    task_ids: TaskIds = []
    queues: list[Name] = []
    all: bool = False
    until_terminal: bool = False


class TaskEvent(WireStruct, kw_only=True, frozen=True):
    """Pushed by the broker; ``subscription_id`` is the request id of the SUBSCRIBE.
    ``truncated``: ``result``, ``error``, ``error_type`` and ``progress_message`` were left
    out because the event would not fit the client's frame limit."""

    type_code: ClassVar[MessageType] = _T.TASK_EVENT
    subscription_id: RequestId
    task_id: TaskIdBytes
    state: str
    queue: str = ""
    task_type: str = ""
    at: Timestamp
    attempts: Count = 0
    result: bytes | None = None
    error: str | None = None
    progress: Percent | None = None
    progress_message: str | None = None
    error_type: str | None = None
    truncated: bool = False


class Unsubscribe(_Correlated, kw_only=True, frozen=True):
    type_code = _T.UNSUBSCRIBE
    subscription_id: RequestId


class ListWorkers(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIST_WORKERS


class WorkersReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.WORKERS_REPLY
    workers: list[WorkerInfo] = []


# --- workers -------------------------------------------------------------------------------


class RegisterWorker(_Correlated, kw_only=True, frozen=True):
    type_code = _T.REGISTER_WORKER
    worker_id: Name
    name: ShortText = ""
    queues: Annotated[list[Name], Meta(min_length=1)]
    concurrency: Annotated[int, Meta(ge=1)] = 1
    hostname: ShortText = ""
    pid: Count = 0
    pool: ShortText = ""
    #: Every order numbered up to this one was carried out (0: none yet).
    acked: Count = 0


class RegisterReply(_Correlated, kw_only=True, frozen=True):
    """``orders``: the worker's orders not acknowledged yet, oldest first."""

    type_code = _T.REGISTER_REPLY
    worker_id: str
    lease_duration: PositiveSeconds
    heartbeat_interval: PositiveSeconds
    orders: list[WorkerOrderInfo] = []


class Heartbeat(_Correlated, kw_only=True, frozen=True):
    """``running`` lists every task the worker holds; ``started`` those of them it runs (the
    rest are reserved); ``draining``: it claims no more; ``acked``: every order numbered up
    to this one was carried out."""

    type_code = _T.HEARTBEAT
    worker_id: Name
    cpu_percent: CpuPercent = 0.0
    memory_rss: Count = 0
    running: TaskIds = []
    started: TaskIds = []
    draining: bool = False
    acked: Count = 0


class HeartbeatReply(_Correlated, kw_only=True, frozen=True):
    """``cancelled``: stop these (cooperative cancel); ``unknown``: their lease is gone;
    ``orders``: the worker's orders not acknowledged yet, oldest first."""

    type_code = _T.HEARTBEAT_REPLY
    lease_expires_at: Timestamp
    cancelled: TaskIds = []
    unknown: TaskIds = []
    orders: list[WorkerOrderInfo] = []


class DeregisterWorker(_Correlated, kw_only=True, frozen=True):
    type_code = _T.DEREGISTER_WORKER
    worker_id: Name


# --- API keys ------------------------------------------------------------------------------


class KeyCreate(_Correlated, kw_only=True, frozen=True):
    type_code = _T.KEY_CREATE
    key: KeySpec


class KeyCreateReply(_Correlated, kw_only=True, frozen=True):
    """``secret``: the whole key, shown this once (the broker keeps only its hash)."""

    type_code = _T.KEY_CREATE_REPLY
    key: KeyInfo
    secret: str


class KeyList(_Correlated, kw_only=True, frozen=True):
    type_code = _T.KEY_LIST


class KeyListReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.KEY_LIST_REPLY
    keys: list[KeyInfo] = []


class KeyRevoke(_Correlated, kw_only=True, frozen=True):
    type_code = _T.KEY_REVOKE
    key_id: Name


class KeyRevokeReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.KEY_REVOKE_REPLY
    key: KeyInfo


class GetClusterStatus(_Correlated, kw_only=True, frozen=True):
    """The cluster's nodes, leader and log, as the node asked sees them (any node answers)."""

    type_code = _T.CLUSTER_STATUS


class ClusterStatusReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.CLUSTER_STATUS_REPLY
    status: ClusterStatus


# --- management actions: cancel, retry, delete by ids or by filter -------------------------

#: Most tasks one ACT_ON_TASKS names or one ACT_ON_FILTER selects.
MAX_ACT_TASKS: Final = 10_000
#: What the broker counts per task of an ACT_REPLY against the client's frame limit: a
#: request whose reply could exceed it is refused REPLY_TOO_LARGE before anything is done.
ACT_ITEM_BYTES: Final = 256
#: Longest ``message`` of an ActResult, in bytes of UTF-8; a longer one is cut to this.
ACT_MESSAGE_MAX: Final = 200
#: What a management action does: ``cancel`` a task that has not finished, ``retry`` (requeue)
#: a dead-lettered one, ``delete`` a finished one (completed, dead_letter, cancelled).
ActionName = Literal["cancel", "retry", "delete"]


class ActOnTasks(_Correlated, kw_only=True, frozen=True):
    """``action`` on each of ``task_ids`` (a repeated id is answered once)."""

    type_code = _T.ACT_ON_TASKS
    action: ActionName
    task_ids: Annotated[list[TaskIdBytes], Meta(max_length=MAX_ACT_TASKS)]


class ActOnFilter(_Correlated, kw_only=True, frozen=True):
    """``action`` on the first ``limit`` tasks (in id order) after ``cursor`` matching every
    given filter (LIST_TASKS' fields; at least one must narrow the selection)."""

    type_code = _T.ACT_ON_FILTER
    action: ActionName
    state: TaskState | None = None
    queue: Name | None = None
    task_type: Name | None = None
    priority_min: Priority | None = None
    priority_max: Priority | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    cursor: bytes | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_ACT_TASKS)] = 1000


class ActReply(_Correlated, kw_only=True, frozen=True):
    """One result per task acted on, in order; ``next_cursor`` (ACT_ON_FILTER only): more
    tasks may match, send it back as ``cursor`` to go on."""

    type_code = _T.ACT_REPLY
    results: list[ActResult] = []
    next_cursor: bytes | None = None


# --- schedules -----------------------------------------------------------------------------


class ScheduleCreate(_Correlated, kw_only=True, frozen=True):
    """Create a schedule; ``replace``: a schedule of that name is replaced (one whose
    definition is unchanged keeps its next firing time), else SCHEDULE_ALREADY_EXISTS."""

    type_code = _T.SCHEDULE_CREATE
    schedule: ScheduleSpec
    replace: bool = False


class ScheduleReply(_Correlated, kw_only=True, frozen=True):
    """The schedule a create, get, pause, resume or delete is about, as it is now (as it
    was, for a delete)."""

    type_code = _T.SCHEDULE_REPLY
    schedule: ScheduleInfo


class ScheduleList(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_LIST


class ScheduleListReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_LIST_REPLY
    schedules: list[ScheduleInfo] = []


class ScheduleGet(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_GET
    name: ScheduleName


class SchedulePause(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_PAUSE
    name: ScheduleName


class ScheduleResume(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_RESUME
    name: ScheduleName


class ScheduleDelete(_Correlated, kw_only=True, frozen=True):
    type_code = _T.SCHEDULE_DELETE
    name: ScheduleName


# --- flow control --------------------------------------------------------------------------


class QueuePause(_Correlated, kw_only=True, frozen=True):
    """Pause a queue: it takes submits and hands out nothing until resumed."""

    type_code = _T.QUEUE_PAUSE
    queue: Name


class QueueResume(_Correlated, kw_only=True, frozen=True):
    type_code = _T.QUEUE_RESUME
    queue: Name


class QueueStateReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.QUEUE_STATE_REPLY
    state: QueueState


class LimitSet(_Correlated, kw_only=True, frozen=True):
    """Replace the rate limit / concurrency cap of a queue or task type."""

    type_code = _T.LIMIT_SET
    limit: LimitSpec


class LimitSetReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIMIT_SET_REPLY
    limit: LimitInfo


class LimitClear(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIMIT_CLEAR
    scope: LimitScope
    name: Name


class LimitList(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIMIT_LIST


class LimitListReply(_Correlated, kw_only=True, frozen=True):
    type_code = _T.LIMIT_LIST_REPLY
    limits: list[LimitInfo] = []


# --- worker control ------------------------------------------------------------------------


class WorkerInspect(_Correlated, kw_only=True, frozen=True):
    type_code = _T.WORKER_INSPECT
    worker_id: Name


class WorkerInspectReply(_Correlated, kw_only=True, frozen=True):
    """``running`` and ``reserved``: ids of the tasks the worker runs and holds unstarted,
    at most ``MAX_INSPECT_IDS`` each (``worker.running`` and ``worker.reserved`` count them
    all); ``orders``: its orders not acknowledged yet."""

    type_code = _T.WORKER_INSPECT_REPLY
    worker: WorkerInfo
    running: TaskIds = []
    reserved: TaskIds = []
    orders: list[WorkerOrderInfo] = []


#: Task ids of each kind a WORKER_INSPECT_REPLY lists at most (~19 KiB each).
MAX_INSPECT_IDS: Final = 1000


class WorkerControl(_Correlated, kw_only=True, frozen=True):
    """Order a worker to shut down gracefully, or to consume or stop consuming ``queue``."""

    type_code = _T.WORKER_CONTROL
    worker_id: Name
    action: OrderActionName
    queue: ShortText = ""


class WorkerControlReply(_Correlated, kw_only=True, frozen=True):
    """``order`` None: it changes nothing (the worker does so already, or was ordered to);
    ``pending``: every order the worker has not acknowledged yet, the new one last."""

    type_code = _T.WORKER_CONTROL_REPLY
    order: WorkerOrderInfo | None = None
    pending: list[WorkerOrderInfo] = []


class WorkerOrders(WireStruct, kw_only=True, frozen=True):
    """Pushed by the broker on the connection a worker last registered or heartbeat on, once
    an order for it is durable: its orders not acknowledged yet, oldest first."""

    type_code: ClassVar[MessageType] = _T.WORKER_ORDERS
    worker_id: str
    orders: list[WorkerOrderInfo] = []
