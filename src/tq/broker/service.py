"""The broker's use-case API: what every front door (TCP, REST, WebSocket, gRPC) calls.

Theory of operation: a call turns its request into a core command (adding the time, new ids
and random draws), applies it to the state machine at once, and gets back the reply plus a
future for the durability of the current batch. All commands of one event-loop turn share a
batch: at the end of the turn ``_flush`` serves waiting long-poll claims, writes the batch
(one WriteBatch) and starts its group-committed fsync; when that returns, the batch future
resolves and the batch's task events are published to subscribers. Submits, results and
everything a client waits on are answered only after that future; claims are answered at
once (a crash before durability only means the task is handed out again: at-least-once).
A cluster leader's ``BatchSink`` hears the commands of each written batch, in applied order
(one replicated log entry each); a single broker has none, and keeps no commands.

Events and totals show only what is durable. When a written batch's fsync fails, the disk may
have kept it or not: its events wait until memory is rebuilt from the disk (``adopt``), which
then publishes the states it kept; a subscription that starts while a task's latest state is
not published is pushed the task's final state once durable, unless an event of the task
reaches it first (``tq.broker.delivery``). GET_STATS and metrics show the lifetime totals of
the latest durable batch, so they never go down, not even across an outage or a crash.

Access is checked here, once for every door: each use case takes the caller's ``Principal``
(what the door authenticated, ``authenticate``; ``Principal.ANYONE`` with auth disabled) and
``allow`` checks it first: the key still valid, its permission and queues, its rate limit
(``tq.broker.access``, ``ratelimit``, ``scope``).

Doors hold no rules: they translate their transport into this module's calls and the request
types of ``tq.broker.requests``, and back. What several doors would otherwise each do —
durability gating of events, bulk actions and their wording, listing filters, connection
bookkeeping — lives here once.

(Over 600 lines on purpose: it is the whole use-case API, one method per request, read as one
contract; the mechanisms behind it live in their own modules: ``actions``, ``listing``,
``events``, ``delivery``, ``waiters``, ``quotas``, ``convert``, ``storage_guard``, ``flow``.)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tq.broker import actions, control, keyadmin, schedules
from tq.broker import flow as flowctl
from tq.broker.access import KeyRing, Permission, Principal, authorize, check_current
from tq.broker.aging import Aging
from tq.broker.convert import IdSource, new_task, state_event, status_too_large, task_info
from tq.broker.delivery import Backlog, Push, Pushes, kept_states
from tq.broker.events import EventHub, Sink, Subscription
from tq.broker.instruments import Instruments
from tq.broker.listing import list_tasks
from tq.broker.quotas import Quotas, check_request_queues
from tq.broker.ratelimit import RateLimiter
from tq.broker.requests import Action, BulkResult, ListQuery, TaskFilter, Watch
from tq.broker.scope import narrow_filter, narrow_query, narrow_stats, narrow_watch, narrow_workers
from tq.broker.streams import End, OpenStreams, Stream
from tq.broker.waiters import Budget, ClaimWaiters
from tq.config import Settings, SyncMode
from tq.core import commands as c
from tq.core.control import OrderAction
from tq.core.effects import Effects, TaskEvent
from tq.core.ids import TaskId, WorkerId, format_task_id
from tq.core.layout import ApiKey, Counters, Family, Mutation, RateLimit, WorkerStats
from tq.core.machine import Machine
from tq.core.model import RetryPolicy, Task, TaskState
from tq.core.replies import (
    Affected,
    ClaimedTask,
    ClaimReply,
    HeartbeatReply,
    ItemCodes,
    Reply,
    SubmitReply,
)
from tq.core.sizes import info_size
from tq.core.times import format_rfc3339
from tq.errors import (
    ConflictError,
    ErrorCode,
    NotFoundError,
    NotLeaderError,
    PermissionDeniedError,
    StorageError,
    TqError,
    UnauthenticatedError,
    UnavailableError,
)
from tq.protocol.records import (
    ClusterStatus,
    KeyInfo,
    KeySpec,
    LimitInfo,
    LimitSpec,
    QueueDepth,
    QueueState,
    ScheduleInfo,
    ScheduleSpec,
    Stats,
    TaskInfo,
    TaskOutcome,
    TaskSpec,
    WorkerInfo,
    WorkerOrderInfo,
)
from tq.storage.base import Store
from tq.storage.commit import GroupCommit
from tq.storage.recovery import read_task, terminal_state

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Reply)
Durable = asyncio.Future[None]
OK = 0
#: How long a door waits for a change to be confirmed durable before answering TIMEOUT.
DURABLE_TIMEOUT_S = 30.0


def _log_failure(e: BaseException) -> None:
    log.critical("storage.failed error=%s", e)


class BatchSink(Protocol):
    """Hears the commands of each batch written, in the order they were applied: what a
    leader appends to the replicated log as one entry (``tq.cluster.entry``). Called on the
    loop once the batch's WriteBatch is written, before its fsync; it must not raise."""

    def batch(self, commands: list[c.Command]) -> None: ...


class Replicator(Protocol):
    """A cluster leader's log appender (``tq.cluster.leader``): takes each applied batch (its
    commands and mutations) in order and calls ``done`` once the batch is committed in the
    replicated log and written to this node's store, or with why it is not."""

    def submit(
        self,
        commands: list[c.Command],
        mutations: list[Mutation],
        done: Callable[[BaseException | None], None],
    ) -> None: ...


@dataclass
class DoorStats:
    """One door's connection counters: kept by the door, read by the metrics door."""

    established: int = 0  #: open connections past their handshake
    handshaking: int = 0  #: accepted connections still before their handshake
    refused: int = 0  #: handshakes refused at the connection limit
    #: Connections closed before their handshake completed, by reason (timeout, evicted).
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class BrokerService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        machine: Machine,
        *,
        node_id: str | None = None,
        sink: BatchSink | None = None,
        cluster: bool = False,
    ) -> None:
        b = settings.broker
        self.settings = settings
        self.store = store
        self.machine = machine
        self.node_id = node_id or b.node_id
        self.commit = GroupCommit(store, relaxed=settings.persistence.sync_mode is SyncMode.RELAXED)
        self.events = EventHub()
        self.waiters = ClaimWaiters()
        self.refill = flowctl.RefillTimer()  # serves claims held back by a rate limit
        self.quotas = Quotas.of(b)
        self.ids = IdSource()
        self.rng = random.Random(os.urandom(16))
        self.started = time.time()
        self.default_retry = RetryPolicy(
            b.retry_backoff_base_s, b.retry_backoff_factor, b.retry_backoff_max_s, b.retry_jitter
        )
        self.dead_after = b.heartbeat_interval_s * b.dead_worker_missed_heartbeats * 1.1
        self.aging = Aging(b)
        self._fx = Effects()
        #: With a sink (a cluster leader): the commands applied in this turn, for its entry.
        #: None in single-node mode: nothing is kept, so nothing changes there.
        self.sink = sink
        self._commands: list[c.Command] | None = None if sink is None and not cluster else []
        #: A cluster node: writes wait for the replicated log (``lead``); a single broker
        #: always leads and writes to its own WAL.
        self.cluster = cluster
        self.leading = not cluster
        #: While leading a cluster: the appender each batch goes through before it is answered.
        self.replicator: Replicator | None = None
        #: The TCP address of the cluster's leader as last seen (this node's own while it
        #: leads; None between leaders): what a refused write names.
        self.leader_address: str | None = None
        #: Why this node does not lead, for the refusal (set by the cluster node).
        self.follower_reason = "this node is a follower"
        #: Set (why) while this follower cannot vouch that it applied everything etcd held
        #: up to ``raft.leader_lease_ttl_s`` ago: its reads are refused (``allow``).
        self.stale: str | None = None
        #: The cluster node's view (``tq.broker.node``); None on a single broker.
        self.cluster_view: Callable[[], ClusterStatus] | None = None
        self._batch: Durable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog = Backlog()  # events of written batches not published yet
        self._pushes = Pushes()  # final events owed to subscriptions once durable
        #: The lifetime totals of the latest durable batch: what GET_STATS and metrics show.
        self._totals = copy.copy(machine.meta.counters)
        #: Set while storage refuses writes (why, for refusals and readiness); see
        #: ``tq.broker.storage_guard``, which hears of a failure through ``on_storage_failure``
        #: (called once per outage) and clears this when writes resume.
        self.failed: BaseException | None = None
        self.on_storage_failure: Callable[[BaseException], None] = _log_failure
        self.storage_failures = 0  # outages (storage failures that stopped writes), for metrics
        #: Set by the metrics front door; None: nothing is measured beyond plain counters.
        self.instruments: Instruments | None = None
        #: Connection counters of each door ("tcp", ...), kept by the door, read by metrics.
        self.doors: dict[str, DoorStats] = {}
        auth = settings.auth
        self.keyring = KeyRing(self._key)
        self.limiter = RateLimiter(
            {
                k: None if v is None else RateLimit(v.rate, v.burst)
                for k, v in auth.rate_limits.items()
            }
        )
        #: Streams (WebSocket, gRPC watches) held by each key: ended on revoke or expiry.
        self.streams = OpenStreams()
        #: The connection each worker was last heard on, for pushing its orders.
        self.reaches = control.Reaches()

    # ------------------------------------------------------------------ access

    def _key(self, key_id: str) -> ApiKey | None:
        return self.machine.key(key_id)  # the machine of now: storage recovery swaps it

    async def authenticate(self, presented: str | None) -> Principal:
        """The caller a door serves, from the API key it presented (once per connection or
        stream; REST per request, cheap after the first: ``access.KeyRing``). With auth
        disabled every caller is ``Principal.ANYONE`` and a presented key is not looked at."""
        if not self.settings.auth.enabled:
            return Principal.ANYONE
        return await self.keyring.verify(presented, time.time())

    def allow(
        self,
        who: Principal,
        permission: Permission,
        queues: Iterable[str] = (),
        *,
        spend: bool = True,
        current: bool = True,
    ) -> None:
        """The one check of every use case, for every door: ``who`` is still valid (a key
        revoked or expired since the door authenticated it is refused now), holds
        ``permission`` on ``queues``, and is within its rate limit for that class (``spend``
        False: a stream's periodic tick, rate-limited once when the stream was asked for).
        A call on a cluster follower whose view may be older than the staleness bound is
        refused with NOT_LEADER naming the leader (``current`` False: a read about the
        cluster itself, answered anyway)."""
        if who.key_id is None:
            if self.settings.auth.enabled:  # a door that authenticated nobody: fail closed
                raise UnauthenticatedError("no API key given: this broker requires one")
        else:
            check_current(self.machine.key(who.key_id), who.key_id, time.time())
            authorize(who, permission, queues)
            if spend:
                self.limiter.take(who, permission, time.monotonic())
        if self.stale is not None and current and not self.leading:
            raise self.not_leader(f"this follower's view may be stale ({self.stale})")

    def hold(self, who: Principal, end: End) -> Stream:
        """Register an open stream of ``who`` (a TCP connection, a WebSocket, a gRPC watch):
        ``end`` is called
        once, with the UnauthenticatedError, when its key is revoked (at once) or expires (at
        its expiry time). The door releases the stream when it ends by itself."""
        return self.streams.hold(who, end)

    def _queues_of(self, who: Principal, task_ids: Iterable[TaskId]) -> list[str]:
        """The queues of the named tasks that exist, for a scoped key's check (an unscoped
        key may use every queue: nothing is looked up)."""
        if who.queues is None:
            return []
        found = (self.machine.get(i) or read_task(self.store, i) for i in task_ids)
        return [t.queue for t in found if t is not None]

    async def create_key(self, who: Principal, spec: KeySpec) -> tuple[KeyInfo, str]:
        """A new API key and its secret (shown once). Admin of every queue only: a key
        limited to some queues cannot make one that is not."""
        self._allow_key_admin(who)
        return await keyadmin.create(self, spec)

    def list_keys(self, who: Principal) -> list[KeyInfo]:
        """Every API key (revoked ones too), by id; never a secret or a hash."""
        self._allow_key_admin(who)
        return [keyadmin.key_info(k) for k in self.machine.api_keys()]

    async def revoke_key(self, who: Principal, key_id: str) -> KeyInfo:
        """Revoke a key (KEY_NOT_FOUND if unknown; revoking twice keeps the first time). Open
        connections using it are refused from their next request."""
        self._allow_key_admin(who)
        return await keyadmin.revoke(self, key_id)

    # ------------------------------------------------------------------ schedules

    async def create_schedule(
        self, who: Principal, spec: ScheduleSpec, replace: bool = False
    ) -> ScheduleInfo:
        """Create (or, with ``replace``, replace) a schedule: its firings submit tasks to its
        queue on the caller's behalf, so it takes the submit permission there."""
        self.allow(who, Permission.SUBMIT, [spec.queue])
        old = self.machine.schedule(spec.name)
        if old is not None and who.queues is not None:  # replacing another queue's schedule
            authorize(who, Permission.SUBMIT, [old.template.queue])
        return await schedules.create(self, spec, replace)

    def list_schedules(self, who: Principal) -> list[ScheduleInfo]:
        """Every schedule by name (a scoped key's: those of its queues)."""
        self.allow(who, Permission.READ)
        mine = who.queues
        return [
            schedules.schedule_info(s)
            for s in self.machine.schedules()
            if mine is None or s.template.queue in mine
        ]

    def get_schedule(self, who: Principal, name: str) -> ScheduleInfo:
        self.allow(who, Permission.READ)
        s = schedules.found(self, name)
        authorize(who, Permission.READ, [s.template.queue])
        return schedules.schedule_info(s)

    async def pause_schedule(self, who: Principal, name: str) -> ScheduleInfo:
        self._allow_schedule_admin(who, name)
        return await schedules.pause(self, name)

    async def resume_schedule(self, who: Principal, name: str) -> ScheduleInfo:
        """Resume a paused schedule from now (the firings missed while paused are not made)."""
        self._allow_schedule_admin(who, name)
        return await schedules.resume(self, name)

    async def delete_schedule(self, who: Principal, name: str) -> ScheduleInfo:
        """Delete a schedule (the tasks it submitted stay); answers it as it was."""
        self._allow_schedule_admin(who, name)
        return await schedules.delete(self, name)

    def _allow_schedule_admin(self, who: Principal, name: str) -> None:
        s = self.machine.schedule(name)
        self.allow(who, Permission.ADMIN, [] if s is None else [s.template.queue])

    async def may_scrape(self, presented: str | None) -> None:
        """Metrics are open unless ``auth.enabled`` and ``auth.protect_metrics``: then the
        scraper presents a key with the read permission on every queue (metrics show every
        queue), or is refused as any caller is."""
        auth = self.settings.auth
        if not (auth.enabled and auth.protect_metrics):
            return
        who = await self.authenticate(presented)
        self.allow(who, Permission.READ)
        if who.queues is not None:
            raise PermissionDeniedError(
                f"{who} is limited to queues {', '.join(sorted(who.queues))}: metrics show "
                "every queue, so a scrape needs a read key of every queue"
            )

    def _allow_key_admin(self, who: Principal) -> None:
        self.allow_every_queue(who, Permission.ADMIN, "key administration")

    def allow_every_queue(self, who: Principal, permission: Permission, what: str) -> None:
        """``allow``, for something that spans every queue (key administration, a checkpoint
        of the store): a key limited to some queues is refused it, saying ``what`` needs."""
        self.allow(who, permission)
        if who.queues is not None:
            raise PermissionDeniedError(
                f"{who} is limited to queues {', '.join(sorted(who.queues))}: {what} needs "
                f"an {permission.value} key of every queue"
            )

    # ------------------------------------------------------------------ the apply/commit engine

    def apply(self, cmd: c.Command) -> tuple[Reply, Durable]:
        """Apply one command now; the future resolves when its batch is durable."""
        if not self.leading:
            raise self.not_leader()
        if self.failed is not None:
            raise StorageError(f"writes refused: {self.failed}")
        reply = self.machine.apply(cmd, self._fx)
        if self._commands is not None:  # only what applied: a refused command changed nothing
            self._commands.append(cmd)
        return reply, self._batch_future()

    def _batch_future(self) -> Durable:
        if self._batch is None:
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._batch = loop.create_future()
            loop.call_soon(self._flush)
        return self._batch

    def not_leader(self, why: str | None = None) -> NotLeaderError:
        """The refusal of a write on a node that does not lead (nothing was applied), or of a
        read on a follower that may be behind (``why``)."""
        where = self.leader_address
        then = f"; the leader is {where}" if where else "; no leader is elected right now"
        if why is None:
            why = f"{self.follower_reason}: writes go to the leader"
        return NotLeaderError(why + then, leader=where)

    async def lead(self, replicator: Replicator, address: str, start: Sequence[c.Command]) -> None:
        """This cluster node leads from now on: every batch goes through ``replicator``.

        ``start`` (the term's ``BrokerStarted``, which moves lease tokens to a new epoch)
        is applied and logged first, and nothing else is accepted before it is committed:
        a leader deposed before its first entry was logged must not have handed out a
        lease token in an epoch the next leader will also start (that one never saw it), or
        a stale worker's result could match a token handed out again."""
        self.replicator = replicator
        self.leader_address = address
        durable: Durable | None = None
        for cmd in start:
            self.machine.apply(cmd, self._fx)
            if self._commands is not None:
                self._commands.append(cmd)
            durable = self._batch_future()
        if durable is not None:
            await self.confirmed(durable)
        if self.replicator is replicator:  # not deposed meanwhile
            self.leading = True

    def step_down(self, machine: Machine, why: str) -> None:
        """Stop leading and carry on over ``machine``, rebuilt from the store (a prefix of the
        log): the state applied here but never committed is dropped. Batches still waiting for
        the log were answered by the replicator; the batch of this turn is refused by
        ``_flush``; parked claims are answered with no tasks."""
        self.leading = False
        self.replicator = None
        self.follower_reason = why
        if self.leader_address is not None:
            self.leader_address = None
        self.machine = machine
        self._totals = copy.copy(machine.meta.counters)
        self.waiters.cancel_all()

    def follow(self, machine: Machine, events: list[TaskEvent]) -> None:
        """A follower applied a log entry: ``machine`` is the node's state now (the same object
        unless it was rebuilt); its events go out (the entry is committed in the log)."""
        self.machine = machine
        self.batch_durable(events, copy.copy(machine.meta.counters))
        for key_id in self.streams.holders():  # a key revoked on the leader ends here too
            key = machine.key(key_id)
            if key is not None and key.revoked_at is not None:
                self.keyring.forget(key_id)
                self.limiter.forget(key_id)
                when = format_rfc3339(key.revoked_at, "seconds")
                why = UnauthenticatedError(f"API key {key_id} was revoked at {when}")
                self.streams.revoked(key_id, why)

    def _flush(self) -> None:
        if self.failed is None and self.cluster and self.replicator is None:
            # Leadership ended during this turn: its changes were never logged.
            fut, self._batch, self._fx = self._batch, None, Effects()
            assert fut is not None
            self._take_commands()
            self._backlog.forget()
            fut.set_exception(self.not_leader())
            fut.exception()
            return
        if self.failed is not None:  # storage failed during this turn: nothing more is written
            fut, self._batch, self._fx = self._batch, None, Effects()
            assert fut is not None
            self._take_commands()  # not written: nothing to replicate
            self._backlog.forget()
            self._fail(self.failed, fut)
            return
        machine = self.machine
        freed = machine.take_flow_ready()  # resumed, a capped slot freed, a limit lifted
        if self.waiters and machine.count(TaskState.PENDING):
            # Only queues where tasks became pending in this turn (or flow control let claims
            # through again) can serve a parked claim (it found nothing it could take, or is
            # held until its connection drains).
            waited = self.waiters.queues
            pending = TaskState.PENDING
            ready = {e.queue for e in self._fx.events if e.state is pending and e.queue in waited}
            ready.update(q for q in freed if q in waited)
            if ready:
                self.waiters.serve(ready, self._claimable(), self._claim_for_waiter)
        if machine.flow_active or self.refill.armed:
            self._arm_refill()
        fut, self._batch = self._batch, None
        fx, self._fx = self._fx, Effects()
        assert fut is not None
        self.machine.end_batch(fx)
        totals = copy.copy(self.machine.meta.counters)
        commands = self._take_commands()
        if self.replicator is not None:
            assert commands is not None
            self._replicate(fut, fx, commands, totals)
            return
        try:
            self.commit.write(fx.mutations)
        except StorageError as e:
            self._backlog.forget()  # a failed write leaves nothing on disk: nothing to tell
            self._fail(e, fut)
            return
        if commands is not None:
            self.captured(commands)
        self._backlog.write(fut, fx.events)

        def durable(err: StorageError | None) -> None:
            if err is not None:
                self._backlog.not_durable(fut)
                self._fail(err, fut)
                return
            events = self._backlog.durable(fut)
            fut.set_result(None)
            self.batch_durable(events, totals)

        self.commit.when_durable(durable)

    def _replicate(
        self, fut: Durable, fx: Effects, commands: list[c.Command], totals: Counters
    ) -> None:
        """A cluster leader's batch: answered once its log entry is committed and written
        (``tq.cluster.leader``); its events wait until then, as a single broker's wait for
        the fsync. A refused batch's events are dropped: if its entry reached the log after
        all, the rebuild applies it and publishes them."""
        assert self.replicator is not None
        self._backlog.write(fut, fx.events)

        def done(err: BaseException | None) -> None:
            if err is not None:
                self._backlog.drop(fut)
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()
                return
            events = self._backlog.durable(fut)
            fut.set_result(None)
            self.batch_durable(events, totals)

        self.replicator.submit(commands, fx.mutations, done)

    def _take_commands(self) -> list[c.Command] | None:
        commands = self._commands
        if commands is not None:
            self._commands = []
        return commands

    def captured(self, commands: list[c.Command]) -> None:
        """A batch of ``commands`` was written: the sink hears it (also for the storage
        guard's start batch, written outside ``_flush``)."""
        if self.sink is not None:
            self.sink.batch(commands)

    def batch_durable(self, events: list[TaskEvent], totals: Counters) -> None:
        """A written batch is durable: its totals are the ones shown, its events go out."""
        self._totals = totals
        if events:
            if self._pushes.by_task:
                self._pushes.supersede(events)
            self.events.publish(events)

    def batch_not_durable(self, events: list[TaskEvent]) -> None:
        """A batch written outside ``_flush`` (the storage guard's start batch) failed its
        fsync: its events wait for the rebuild, as those of any written batch."""
        self._backlog.keep(events)

    def adopt(self, store: Store, machine: Machine) -> None:
        """Carry on over memory rebuilt from ``store``, the data dir reopened after a storage
        failure (the storage guard's swap, with no fsync running). Whether the disk kept the
        written batches whose fsync failed is known only now: the states it kept are published
        (``delivery.kept_states``), through the hub, so every kind of subscription hears them
        by its own rules; the totals shown become the disk's (never below the last shown:
        those were durable)."""
        self.store, self.machine = store, machine
        self.commit.rebind(store)  # pushes waiting for durability run next, after this
        self._totals = copy.copy(machine.meta.counters)
        failed = self._backlog.take_failed()
        if failed:
            kept = kept_states(failed, lambda i: machine.get(i) or read_task(store, i))
            log.info("events.republished tasks=%d", len(kept))
            self.batch_durable(kept, self._totals)

    def _fail(self, e: BaseException, fut: Durable) -> None:
        if not fut.done():
            why = e.message if isinstance(e, TqError) else str(e)
            fut.set_exception(StorageError(f"not made durable, retry later: {why}"))
            fut.exception()
        if self.failed is None:
            self.failed = e
            self.on_storage_failure(e)

    async def drain(self) -> None:
        """Wait until every batch applied so far is settled: durable, or failed."""
        if self._batch is not None:
            await asyncio.gather(asyncio.shield(self._batch), return_exceptions=True)
        if self._backlog.written:
            await asyncio.gather(*self._backlog.written, return_exceptions=True)

    def run(self, cmd: c.Command, reply_type: type[R]) -> tuple[R, Durable]:
        reply, durable = self.apply(cmd)
        assert isinstance(reply, reply_type)
        return reply, durable

    # ------------------------------------------------------------------ tasks

    async def confirmed(self, durable: Durable) -> None:
        """Wait until ``durable`` resolves (shielded: the batch's future is shared), for at
        most ``DURABLE_TIMEOUT_S``; then TIMEOUT, as the change may still be applied."""
        try:
            async with asyncio.timeout(DURABLE_TIMEOUT_S):
                await asyncio.shield(durable)
        except TimeoutError:
            raise UnavailableError(
                f"not confirmed durable within {DURABLE_TIMEOUT_S:g} s (it may still be applied)",
                ErrorCode.TIMEOUT,
            ) from None

    def submit(
        self, who: Principal, specs: Sequence[TaskSpec], *, received: float | None = None
    ) -> tuple[SubmitReply, Durable]:
        """Submit tasks, all or nothing. ``received``: ``time.monotonic()`` when the request
        arrived, for the submit-latency metric (measured until durable)."""
        self.allow(who, Permission.SUBMIT, () if who.queues is None else {s.queue for s in specs})
        now = time.time()
        b = self.settings.broker
        tasks = tuple(new_task(s, now, self.ids, b, i) for i, s in enumerate(specs))
        known: dict[TaskId, TaskState] = {}
        for t, s in zip(tasks, specs, strict=True):
            refs = (*t.depends_on, t.id) if s.id is not None else t.depends_on
            for ref in refs:
                if ref not in known and self.machine.get(ref) is None:
                    # A task that ended in this loop turn is not in storage yet (or only its
                    # older record is): its state in the unwritten batch wins.
                    state = self._pending_state(ref)
                    if state is None:
                        stored = read_task(self.store, ref)
                        state = None if stored is None else stored.state
                    if state is not None:
                        known[ref] = state
        cmd = c.SubmitTasks(now, tasks, b.backpressure_threshold, b.idempotency_window_s, known)
        reply, durable = self.run(cmd, SubmitReply)
        if received is not None and (ins := self.instruments) is not None:
            hist = ins.submit_latency
            durable.add_done_callback(lambda _: hist.observe(time.monotonic() - received))
        return reply, durable

    def status(
        self,
        who: Principal,
        task_ids: Sequence[TaskId],
        include_payload: bool,
        max_bytes: int | None = None,
    ) -> list[TaskInfo | None]:
        """The tasks by id (None: no such task). ``max_bytes``: the most their records may
        take (``sizes.info_size``); a lookup beyond it is refused whole with REPLY_TOO_LARGE
        as soon as the budget is passed, before the records after it are read. A task of a
        queue outside a scoped key's is PERMISSION_DENIED, the whole lookup with it."""
        self.allow(who, Permission.READ)
        infos = self.lookup(task_ids, include_payload, max_bytes)
        if who.queues is not None:
            authorize(who, Permission.READ, {i.queue for i in infos if i is not None})
        return infos

    def lookup(
        self, task_ids: Sequence[TaskId], include_payload: bool, max_bytes: int | None = None
    ) -> list[TaskInfo | None]:
        """``status`` unchecked: for the service's own mechanisms (``actions``)."""
        out: list[TaskInfo | None] = []
        room = max_bytes
        for i, task_id in enumerate(task_ids):
            task = self.machine.get(task_id) or read_task(self.store, task_id)
            if task is not None and room is not None:
                room -= info_size(task, include_payload)
                if room < 0:
                    raise status_too_large(task_ids, i, include_payload, max_bytes or 0)
            if task is None:
                out.append(None)
                continue
            effective = self.aging.effective(task, time.time())
            out.append(task_info(task, include_payload, effective=effective))
        return out

    def cancel(self, who: Principal, task_ids: Sequence[TaskId]) -> tuple[list[int], Durable]:
        """Cancel tasks; per id 0, TASK_NOT_FOUND or INVALID_STATE."""
        self.allow(who, Permission.ADMIN, self._queues_of(who, task_ids))
        return self.cancel_ids(task_ids)

    def cancel_ids(self, task_ids: Sequence[TaskId]) -> tuple[list[int], Durable]:
        """``cancel`` unchecked: for ``actions``, which checked the caller first."""
        reply, durable = self.run(c.CancelTasks(time.time(), tuple(task_ids)), ItemCodes)
        codes = list(reply.codes)
        for i, code in enumerate(codes):
            if code == ErrorCode.TASK_NOT_FOUND and read_task(self.store, task_ids[i]) is not None:
                codes[i] = ErrorCode.INVALID_STATE  # it exists but has already finished
        return codes, durable

    def retry_ids(self, task_ids: Sequence[TaskId]) -> tuple[list[int], Durable]:
        """Requeue dead-lettered tasks; per id 0, TASK_NOT_FOUND or INVALID_STATE. Unchecked:
        for ``actions``, which checked the caller first."""
        found: list[Task] = []
        codes: list[int] = []
        slots: list[int] = []
        for task_id in task_ids:
            task = None if self.machine.get(task_id) else read_task(self.store, task_id)
            if task is None:
                live = self.machine.get(task_id) is not None
                codes.append(ErrorCode.INVALID_STATE if live else ErrorCode.TASK_NOT_FOUND)
                continue
            slots.append(len(codes))
            codes.append(OK)
            found.append(task)
        reply, durable = self.run(c.RetryTasks(time.time(), tuple(found)), ItemCodes)
        for slot, code in zip(slots, reply.codes, strict=True):
            codes[slot] = code
        return codes, durable

    def delete_ids(self, task_ids: Sequence[TaskId]) -> tuple[list[int], Durable]:
        """Delete finished tasks (completed, cancelled, dead letter); a live task is
        INVALID_STATE (cancel it first), an unknown one TASK_NOT_FOUND. Unchecked: for
        ``actions``, which checked the caller first."""
        ids: list[TaskId] = []
        states: list[TaskState] = []
        codes: list[int] = []
        for task_id in task_ids:
            if self.machine.get(task_id) is not None:
                codes.append(ErrorCode.INVALID_STATE)
                continue
            state = terminal_state(self.store, task_id)
            if state is None:
                codes.append(ErrorCode.TASK_NOT_FOUND)
                continue
            ids.append(task_id)
            states.append(state)
            codes.append(OK)
        _, durable = self.run(c.PurgeTasks(time.time(), tuple(ids), tuple(states)), Affected)
        return codes, durable

    def list_tasks(self, who: Principal, query: ListQuery) -> tuple[list[TaskInfo], bytes | None]:
        """Filtered, cursor-paged listing (see ``tq.broker.listing``); a scoped key's is
        narrowed to its queues (``scope.narrow_filter``)."""
        self.allow(who, Permission.READ)
        return self.page(narrow_query(who, query))

    def page(self, query: ListQuery) -> tuple[list[TaskInfo], bytes | None]:
        """``list_tasks`` unchecked: for ``actions``, which checked the caller first."""
        tasks, cursor = list_tasks(self.store, query)
        # A page always holds its first task: one too large for the page alone (a big result)
        # is listed without its large fields rather than blocking the listing at it.
        budget, now, aging = query.max_bytes, time.time(), self.aging
        infos = [
            task_info(
                t, False, truncated=info_size(t, False) > budget, effective=aging.effective(t, now)
            )
            for t in tasks
        ]
        return infos, cursor

    # ------------------------------------------------------------------ management actions

    async def act(self, who: Principal, action: Action, task_ids: Sequence[TaskId]) -> BulkResult:
        """Cancel, retry or delete each task; per-task answers, once durable. One task of a
        queue outside a scoped key's refuses the whole call (nothing is applied)."""
        self.allow(who, Permission.ADMIN, self._queues_of(who, task_ids))
        return await actions.apply(self, action, task_ids)

    async def act_on_filter(
        self,
        who: Principal,
        action: Action,
        f: TaskFilter,
        limit: int,
        cursor: bytes | None = None,
    ) -> BulkResult:
        """Cancel, retry or delete the first ``limit`` tasks ``f`` selects after ``cursor``
        (a ``next_cursor``), within a scoped key's queues (``scope.narrow_filter``)."""
        self.allow(who, Permission.ADMIN)
        return await actions.apply_filter(
            self, action, narrow_filter(who, f, Permission.ADMIN), limit, cursor
        )

    async def act_one(self, who: Principal, action: Action, task_id: TaskId) -> TaskInfo | None:
        """Cancel, retry or delete one task; raises its worded error. The task as it is now
        (None once deleted)."""
        self.allow(who, Permission.ADMIN, self._queues_of(who, [task_id]))
        await actions.apply_one(self, action, task_id)
        return self.lookup([task_id], False)[0]

    def ready(self) -> bool:
        """Readiness: recovered, storage healthy (liveness is the process answering at all).
        A cluster follower is ready: it serves reads and names the leader for writes."""
        return self.failed is None

    def may_write(self) -> bool:
        """Whether commands may be applied now: this node leads and storage takes writes (the
        time-driven jobs skip their turn otherwise; the leader's jobs do it for the cluster)."""
        return self.leading and self.failed is None

    # ------------------------------------------------------------------ workers

    def claim(
        self,
        who: Principal,
        worker_id: WorkerId,
        queues: Sequence[str],
        max_tasks: int | None,
        wait: float,
        respond: Callable[[list[ClaimedTask]], None],
        owner: object = None,
        *,
        received: float | None = None,
        budget: Budget | None = None,
        refuse: Callable[[TqError], None] | None = None,
    ) -> None:
        """Claim now; with nothing to hand out and ``wait`` > 0, park a long-poll waiter that
        the end of a later turn serves (or its deadline answers with no tasks). ``max_tasks``
        None: the configured default batch. ``owner``: the connection, whose parked claims
        ``detach`` drops, and whose parked claims are capped (``quotas.may_park``: a claim
        beyond the caps that finds nothing is answered at once); ``received``: as for ``submit``.
        ``budget()``: the bytes the reply may carry now (``sizes.claimed_size`` of its tasks;
        0: nothing now, as while the connection does not take its replies; the owner then
        calls ``wake_claims`` once it takes them again); None: no byte budget.

        On a cluster leader, tasks are handed out only once the claim is committed in the
        log (a leader deposed before that must not have a worker run a task the cluster may
        never have had); if it is not, ``refuse`` hears why (else the reply has no tasks)."""
        self.allow(who, Permission.WORK, queues)
        check_request_queues(queues)
        if self.cluster:
            respond = self._once_logged(respond, refuse)
        b = self.settings.broker
        n = min(b.default_claim_batch if max_tasks is None else max_tasks, b.max_claim_batch)
        room = 0 if budget is None else budget()
        tasks: list[ClaimedTask] = []
        if budget is None or room > 0:
            queues = tuple(queues)
            cmd = c.ClaimTasks(
                time.time(), worker_id, queues, n, self.lease, room, self.aging.for_claim(queues)
            )
            tasks = self.run(cmd, ClaimReply)[0].tasks
        if tasks or wait <= 0 or not self.quotas.may_park(self.waiters.parked(owner), queues):
            respond(tasks)
        else:
            wait = min(wait, b.max_long_poll_s)
            self.waiters.park(worker_id, tuple(queues), n, wait, respond, owner, budget)
        if received is not None and (ins := self.instruments) is not None:
            # Until answered, or parked: a long poll's wait for work is the queue's emptiness,
            # not the broker's latency.
            ins.claim_latency.observe(time.monotonic() - received)

    def _once_logged(
        self,
        respond: Callable[[list[ClaimedTask]], None],
        refuse: Callable[[TqError], None] | None,
    ) -> Callable[[list[ClaimedTask]], None]:
        """``respond`` deferred until the batch that leased its tasks is committed (an empty
        answer goes at once: it leased nothing)."""

        def answer(tasks: list[ClaimedTask]) -> None:
            if not tasks:
                respond(tasks)
                return

            def done(f: Durable) -> None:
                err = f.exception()
                if err is None:
                    respond(tasks)
                elif refuse is not None and isinstance(err, TqError):
                    refuse(err)
                else:
                    respond([])

            self._batch_future().add_done_callback(done)

        return answer

    def _claim_for_waiter(
        self, worker_id: WorkerId, queues: tuple[str, ...], n: int, max_bytes: int
    ) -> list[ClaimedTask]:
        aging = self.aging.for_claim(queues)
        cmd = c.ClaimTasks(time.time(), worker_id, queues, n, self.lease, max_bytes, aging)
        return self.run(cmd, ClaimReply)[0].tasks

    def wake_claims(self, owner: object) -> None:
        """``owner`` takes its replies again: its parked claims held back meanwhile claim
        now, or wait in line again (cheap when it holds none)."""
        if self.failed is None:
            self.waiters.wake(owner, self._claimable(), self._claim_for_waiter)

    def _claimable(self) -> Callable[[str], int]:
        """What a parked claim on a queue could take now: its pending tasks, or with flow
        control on, whether pause, caps and rate limits let any through."""
        m = self.machine
        if not m.flow_active:
            return m.pending_in
        now = time.time()
        return lambda q: int(m.claimable_in(q, now))

    def _arm_refill(self) -> None:
        """A timer at the next refill of a bucket holding back tasks parked claims wait for."""
        m = self.machine
        parked = bool(self.waiters) and m.flow_active
        self.refill.arm(m.next_refill_at(time.time()) if parked else None, self._refilled)

    def _refilled(self) -> None:
        if not self.may_write():
            return
        claimable = self._claimable()
        ready = {q for q in self.waiters.queues if claimable(q) > 0}
        if ready:
            self.waiters.serve(ready, claimable, self._claim_for_waiter)
        self._arm_refill()

    # ------------------------------------------------------------------ flow control

    async def pause_queue(self, who: Principal, queue: str, *, paused: bool = True) -> QueueState:
        """Pause ``queue`` (``paused`` False: resume it): admin of that queue. A paused queue
        takes submits and hands out nothing; pausing twice keeps the first time."""
        self.allow(who, Permission.ADMIN, [queue])
        return await flowctl.pause(self, queue, paused)

    async def set_limit(self, who: Principal, spec: LimitSpec) -> LimitInfo:
        """Replace the limit of a queue (admin of it) or a task type (admin of every queue:
        a type spans them)."""
        self._allow_limit(who, spec.scope, spec.name)
        return await flowctl.set_limit(self, spec)

    async def clear_limit(self, who: Principal, scope: str, name: str) -> None:
        """Remove the limit of a queue or task type (LIMIT_NOT_FOUND if it has none)."""
        self._allow_limit(who, scope, name)
        await flowctl.clear_limit(self, scope, name)

    def limits(self, who: Principal) -> list[LimitInfo]:
        """Every limit with what it counts now; a scoped key sees its queues' limits and
        every task type's."""
        self.allow(who, Permission.READ)
        return flowctl.limit_infos(self.machine, who.queues)

    def _allow_limit(self, who: Principal, scope: str, name: str) -> None:
        if scope == "queue":
            self.allow(who, Permission.ADMIN, [name])
        else:
            self.allow_every_queue(who, Permission.ADMIN, "a task type's limit")

    @property
    def lease(self) -> float:
        return self.settings.broker.lease_duration_s

    def report(self, who: Principal, outcomes: Sequence[TaskOutcome]) -> tuple[list[int], Durable]:
        """Outcomes of claimed tasks: one CompleteTasks and one FailTasks command at most."""
        self.allow(who, Permission.WORK, self._live_queues(who, (o.task_id for o in outcomes)))
        now = time.time()
        done = [i for i, o in enumerate(outcomes) if o.ok]
        failed = [i for i, o in enumerate(outcomes) if not o.ok]
        codes = [OK] * len(outcomes)
        durable = self._batch_future()
        ins = self.instruments
        limit = self.settings.broker.max_payload_size_bytes
        too_large = [i for i in done if len(outcomes[i].result or b"") > limit]
        if too_large:
            # Stored, a result above the payload limit could not be read back through a
            # frame: the attempt fails for good instead, saying why.
            outcomes = list(outcomes)
            for i in too_large:
                o = outcomes[i]
                why = (
                    f"result of {len(o.result or b'')} bytes is above the limit of {limit} "
                    "bytes (broker.max_payload_size_bytes)"
                )
                outcomes[i] = TaskOutcome(
                    task_id=o.task_id, lease_token=o.lease_token, ok=False, error=why,
                    error_type="ResultTooLarge", retry=False,
                )  # fmt: skip
            done = [i for i in done if i not in too_large]
            failed = sorted((*failed, *too_large))
        if done:
            items = tuple(
                c.CompletedItem(outcomes[i].task_id, outcomes[i].lease_token, outcomes[i].result)
                for i in done
            )
            attempts = None if ins is None else self._live(outcomes, done)
            reply, durable = self.run(c.CompleteTasks(now, items), ItemCodes)
            for i, code in zip(done, reply.codes, strict=True):
                codes[i] = code
            if ins is not None and attempts is not None:
                ins.finished("completed", now, attempts, reply.codes)
        if failed:
            fitems = tuple(
                c.FailedItem(
                    o.task_id, o.lease_token, (o.error or "failed")[:4096], o.retry,
                    self.rng.random(), o.error_type,
                )
                for o in (outcomes[i] for i in failed)
            )  # fmt: skip
            fattempts = None if ins is None else self._live(outcomes, failed)
            freply, durable = self.run(c.FailTasks(now, fitems, self.default_retry), ItemCodes)
            for i, code in zip(failed, freply.codes, strict=True):
                codes[i] = code
            if ins is not None and fattempts is not None:
                ins.finished("failed", now, fattempts, freply.codes)
        for i, code in enumerate(codes):
            if code == ErrorCode.TASK_NOT_FOUND and self._ended(outcomes[i].task_id) is not None:
                codes[i] = ErrorCode.INVALID_STATE  # e.g. cancelled while it ran
        for i in too_large:
            if codes[i] == OK:  # failed as asked: say the result itself was refused
                codes[i] = ErrorCode.PAYLOAD_TOO_LARGE
        return codes, durable

    def _live_queues(self, who: Principal, task_ids: Iterable[TaskId]) -> list[str]:
        """The queues of the named live tasks (a worker's calls are about live tasks: one
        that ended is answered by the machine, not looked up)."""
        if who.queues is None:
            return []
        return [t.queue for i in task_ids if (t := self.machine.get(i)) is not None]

    def _live(self, outcomes: Sequence[TaskOutcome], picked: list[int]) -> list[Task | None]:
        """The tasks the picked outcomes are about, fetched before the command forgets them
        (their ``started_at`` survives the command: metrics read it afterwards)."""
        get = self.machine.get
        return [get(outcomes[i].task_id) for i in picked]

    def heartbeat(
        self,
        who: Principal,
        worker_id: WorkerId,
        cpu: float,
        rss: int,
        running: Sequence[TaskId],
        *,
        started: Sequence[TaskId] = (),
        draining: bool = False,
        acked: int = 0,
        reach: control.OrderSink | None = None,
    ) -> tuple[HeartbeatReply, list[TaskId], Durable]:
        """Returns the reply, the subset of ``unknown`` that was cancelled, and durability.
        ``reach``: the connection the worker's orders are pushed on from now on."""
        self.allow(who, Permission.WORK)
        stats = WorkerStats(cpu, rss, len(running))
        cmd = c.Heartbeat(
            time.time(), worker_id, self.lease, stats, tuple(running), tuple(started),
            draining, acked,
        )  # fmt: skip
        reply, durable = self.run(cmd, HeartbeatReply)
        if reach is not None:
            self.reaches.heard(worker_id, reach)
        cancelled = [
            i
            for i in reply.unknown
            if (terminal_state(self.store, i) or self._pending_state(i)) is TaskState.CANCELLED
        ]
        return reply, cancelled, durable

    def register(
        self,
        who: Principal,
        worker_id: WorkerId,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int,
        hostname: str,
        pid: int,
        acked: int = 0,
        reach: control.OrderSink | None = None,
    ) -> Durable:
        """``acked``: the worker carried out its orders up to this number; ``reach``: the
        connection its orders are pushed on from now on (``pending_orders`` says which)."""
        self.allow(who, Permission.WORK, queues)
        check_request_queues(queues)
        cmd = c.RegisterWorker(
            time.time(), worker_id, name, tuple(queues), concurrency, hostname, pid, acked
        )
        durable = self.apply(cmd)[1]
        if reach is not None:
            self.reaches.heard(worker_id, reach)
        return durable

    def pending_orders(self, worker_id: WorkerId) -> list[WorkerOrderInfo]:
        """The worker's orders not acknowledged yet (none for an unknown worker)."""
        rec = self.machine.worker(worker_id)
        return [] if rec is None else control.orders_info(rec.orders)

    def inspect_worker(self, who: Principal, worker_id: WorkerId) -> control.Inspection:
        """One worker: what it runs, reserved and is ordered. WORKER_NOT_FOUND if unknown; a
        scoped key sees a worker that consumes one of its queues (as ``workers`` lists)."""
        self.allow(who, Permission.READ)
        rec = control.record(self, worker_id)
        if who.queues is not None and not any(q in who.queues for q in rec.queues):
            raise PermissionDeniedError(
                f"{who} may not inspect worker {worker_id}: it consumes none of the key's "
                f"queues ({', '.join(sorted(who.queues))})"
            )
        return control.inspect(self, rec)

    async def control_worker(
        self, who: Principal, worker_id: WorkerId, action: OrderAction, queue: str = ""
    ) -> control.Ordered:
        """Order a worker (``tq.core.control``): admin on its queues and the one named;
        answered once the order is durable."""
        self.allow(who, Permission.ADMIN)
        rec = control.record(self, worker_id)
        self.allow(who, Permission.ADMIN, [*rec.queues, *([queue] if queue else [])], spend=False)
        return await control.order(self, worker_id, action, queue)

    def deregister(self, who: Principal, worker_id: WorkerId) -> Durable:
        self.allow(who, Permission.WORK)
        return self.apply(c.DeregisterWorker(time.time(), worker_id))[1]

    def release(
        self, who: Principal, worker_id: WorkerId, leases: Sequence[tuple[TaskId, int]]
    ) -> Durable:
        """Hand back unstarted claims, each ``(task id, lease token)``. One the worker does not
        hold under that token (a stale release, after its lease expired and the task was
        claimed again) is ignored: it must not free the later attempt."""
        self.allow(who, Permission.WORK, self._live_queues(who, (i for i, _ in leases)))
        items = tuple(c.ReleasedItem(task_id, token) for task_id, token in leases)
        return self.apply(c.ReleaseTasks(time.time(), worker_id, items))[1]

    def progress(
        self, who: Principal, task_id: TaskId, lease_token: int, percent: int, message: str | None
    ) -> Durable:
        self.allow(who, Permission.WORK, self._live_queues(who, [task_id]))
        cmd = c.ReportProgress(time.time(), task_id, lease_token, percent, message)
        try:
            return self.apply(cmd)[1]
        except ConflictError as e:
            ended = self._ended(task_id) if e.code == ErrorCode.TASK_NOT_FOUND else None
            if ended is None:
                raise
            raise ConflictError(
                f"task {format_task_id(task_id)} has already ended ({ended.value})",
                ErrorCode.INVALID_STATE,
            ) from None

    def _ended(self, task_id: TaskId) -> TaskState | None:
        """The final state of a task the machine no longer holds (None: never existed, or
        purged). Tells "it has already ended" (INVALID_STATE) from "no such task"."""
        return self._pending_state(task_id) or terminal_state(self.store, task_id)

    def _pending_state(self, task_id: TaskId) -> TaskState | None:
        """A state reached in the batch not yet written (rare path: only for unknown ids)."""
        states = [e.state for e in self._fx.events if e.task_id == task_id]
        if not states and self.replicator is not None:
            # A cluster leader writes a batch only once it is logged: until then its states
            # are in memory only (newest batch last).
            for events in reversed(self._backlog.written.values()):
                states = [e.state for e in events if e.task_id == task_id]
                if states:
                    break
        return states[-1] if states else None

    def workers(self, who: Principal) -> list[WorkerInfo]:
        """Registered workers; a scoped key sees those serving one of its queues."""
        self.allow(who, Permission.READ)
        return narrow_workers(who, self._workers())

    def _workers(self) -> list[WorkerInfo]:
        now, m = time.time(), self.machine
        return [control.worker_info(w, m.held_by(w.id), now, self.dead_after) for w in m.workers()]

    # ------------------------------------------------------------------ stats and listing

    def stats(self, who: Principal, *, tick: bool = False) -> Stats:
        """Broker-wide figures; a scoped key's cover its queues (``scope.narrow_stats``).
        ``tick``: the periodic stats of a stream (checked, but not rate-limited again)."""
        self.allow(who, Permission.READ, spend=not tick)
        if who.queues is None:
            return self._stats()
        return narrow_stats(who, self._stats(), len(narrow_workers(who, self._workers())))

    def _stats(self) -> Stats:
        m = self.machine
        counts = m.counts()
        depths = m.queue_depths()
        paused = m.paused()
        queues = {}
        for name, by_state in m.queue_counts().items():
            low, normal, high = depths.get(name, (0, 0, 0))
            queues[name] = QueueDepth(
                high=high, normal=normal, low=low,
                scheduled=by_state.get(TaskState.SCHEDULED, 0) + by_state.get(TaskState.FAILED, 0),
                in_progress=by_state.get(TaskState.IN_PROGRESS, 0),
                paused=name in paused,
            )  # fmt: skip
        for name in paused:  # a paused queue is shown even while it holds no task
            queues.setdefault(name, QueueDepth(paused=True))
        totals = {f: getattr(self._totals, f) for f in Counters.__struct_fields__}
        return Stats(
            pending=counts[TaskState.PENDING],
            scheduled=counts[TaskState.SCHEDULED],
            in_progress=counts[TaskState.IN_PROGRESS],
            failed=counts[TaskState.FAILED],
            dead_letter=self.store.approximate_count(Family.DEAD_LETTER),
            workers=len(m.workers()),
            queues=queues,
            totals=totals,
            uptime=max(0.0, time.time() - self.started),
            node_id=self.node_id,
        )

    def cluster_status(self, who: Principal) -> ClusterStatus:
        """The cluster's nodes, leader and log as this node sees them (any node answers, from
        what it last read: no etcd call); a single broker says so."""
        self.allow(who, Permission.READ, current=False)
        if self.cluster_view is None:
            return ClusterStatus(node_id=self.node_id)
        return self.cluster_view()

    def totals(self) -> Counters:
        """The lifetime totals as of the latest durable batch (read them, never mutate them):
        counts of changes that may still be lost are not shown, so they never decrease."""
        return self._totals

    # ------------------------------------------------------------------ events and connections

    def watch(self, who: Principal, sink: Sink, subscription_id: int, watch: Watch) -> None:
        """Follow ``watch`` under ``(sink, subscription_id)``, replacing what that id followed.

        An unknown task id is a NotFoundError and changes nothing. A task id that has already
        finished gets its final event once the batch holding that state is durable (every
        event waits for durability: none may show a state the broker could still lose); with
        ``until_terminal`` that event ends the interest in the id. Each event reaches the
        subscription once: one of a batch not yet durable comes with that batch. A
        subscription that would take the sink past its caps (``quotas``: subscriptions, ids,
        queues) is refused with ValidationError before anything is looked up, and changes
        nothing. A scoped key follows its own queues only: ``all`` means all of them, and a
        queue or task of another is PERMISSION_DENIED."""
        self.allow(who, Permission.READ, (*watch.queues, *self._queues_of(who, watch.task_ids)))
        watch = narrow_watch(who, watch)
        ids = list(dict.fromkeys(watch.task_ids))
        queues = tuple(dict.fromkeys(watch.queues))  # a queue named twice is followed once
        old = self.events.get(sink, subscription_id)
        if watch.anything:  # within the subscriber's caps, checked before any lookup
            following = self.events.following(sink)
            self.quotas.check_watch(following, old, len(ids), len(queues) + watch.all)
        fresh = ids if old is None else [i for i in ids if i not in old.task_ids]
        owed = self._unsettled(fresh)
        if not watch.anything:
            self.events.remove(sink, subscription_id)  # following nothing: nothing to keep
            return
        sub = Subscription(sink, subscription_id, ids, queues, watch.all, watch.until_terminal)
        self.events.add(sub)
        if owed:
            self._push_when_durable(sink, subscription_id, owed)

    def _unsettled(self, task_ids: Sequence[TaskId]) -> list[TaskId]:
        """The ids a subscription starting now is owed an answer about once durable: finished
        tasks (their final event went out before it started), and tasks whose latest events
        are not published yet (if their batch is lost, a task may turn out finished after
        all, e.g. a retried dead letter). A live task whose state is durable owes nothing: its
        events follow. NotFoundError for an unknown id."""
        out: list[TaskId] = []
        if not task_ids:
            return out  # queues or all: nothing owed, and no need to name what is in flight
        coming = self._coming()
        for task_id in task_ids:
            if task_id not in coming:
                if self.machine.get(task_id) is not None:
                    continue
                if read_task(self.store, task_id) is None:
                    raise NotFoundError(f"no task with id {format_task_id(task_id)}")
            out.append(task_id)
        return out

    def _coming(self) -> set[TaskId]:
        """Tasks with events applied but not published yet (the backlog and this turn's)."""
        return self._backlog.ids(self._fx.events)

    def _push_when_durable(self, sink: Sink, subscription_id: int, ids: list[TaskId]) -> None:
        """Push the final events of ``ids`` to the subscription once their states are durable,
        unless an event of the task is published first (``delivery.Pushes``)."""
        self._await_durable(self._pushes.add(sink, subscription_id, ids))

    def _await_durable(self, push: Push) -> None:
        loop = asyncio.get_running_loop()

        # Via the loop even when nothing is left to sync: a door answers the subscribe
        # request first, and its events must follow that answer.
        def later(err: StorageError | None) -> None:
            loop.call_soon(self._deliver, push, err)

        self.commit.when_durable(later)

    def _deliver(self, push: Push, err: StorageError | None) -> None:
        """What ``push`` still owes, now that every write made before it asked is durable: the
        final state of each finished task. A task with events still to come waits for them
        (they supersede it) or for the rebuild, if their batch fails. If the fsync failed,
        storage is rebuilt from what the disk kept: ask again (the answer then waits for the
        rebuild, which publishes first what the disk kept of failed batches)."""
        sub = self.events.get(push.sink, push.subscription_id)
        followed = [] if sub is None else [i for i in push.ids if i in sub.task_ids]
        waiting = followed
        events: list[TaskEvent] = []
        if err is None and followed:
            coming = self._coming()
            waiting = [i for i in followed if i in coming]
            for task_id in followed:
                if task_id in coming or self.machine.get(task_id) is not None:
                    continue  # its events are on their way, or it is durably live again
                task = read_task(self.store, task_id)
                if task is not None and task.state.is_terminal:
                    events.append(state_event(task))
        self._pushes.keep_only(push, waiting)
        if waiting:
            self._await_durable(push)
        if events:
            self.events.push_to(push.sink, push.subscription_id, events)

    def unwatch(self, who: Principal, sink: Sink, subscription_id: int) -> None:
        """End a subscription (unknown ids are ignored: the request is idempotent)."""
        self.allow(who, Permission.READ)
        self.events.remove(sink, subscription_id)

    def detach(self, owner: Sink) -> None:
        """A connection went away: drop its subscriptions and its parked claims."""
        self.waiters.drop(owner)
        self.events.remove_sink(owner)
        self.reaches.drop(owner)

    def instrument(self, instruments: Instruments | None) -> None:
        """Install the metrics door's histograms (None removes them)."""
        self.instruments = instruments
        self.commit.on_sync = None if instruments is None else instruments.on_sync

    def cancel_waiters(self) -> None:
        """Answer every parked claim with no tasks (at shutdown)."""
        self.waiters.cancel_all()
        self.refill.cancel()

    async def close(self) -> None:
        """Make everything applied durable and stop the fsync thread (after ``drain``)."""
        await self.commit.close()

    def door_stats(self, door: str) -> DoorStats:
        """The connection counters of ``door`` (made on first use)."""
        return self.doors.setdefault(door, DoorStats())
