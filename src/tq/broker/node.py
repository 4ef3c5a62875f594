"""A broker as a node of a cluster (``raft.enabled``): follows the replicated log, campaigns
for leadership, leads, and steps down; the service is the same one a single broker runs.

Theory of operation, one term after another:

- **Follow**: apply every log entry after the store's applied mark, in order, through the
  same ``Machine.apply`` (``tq.cluster.replica``), publishing each entry's events; meanwhile
  campaign (``tq.cluster.election``) and keep the leader's address for refusals (a follower
  refuses writes with NOT_LEADER naming it, and serves reads from its own state).
- **Lead**: once elected, no older leader can append any more (its appends compare the leader
  key), so the log is read to its end and applied: the entries whose acknowledgement never
  reached the previous leader are in it, and count. Then the service leads through a
  ``Replicator`` (a batch is answered once its entry is committed in etcd and written here),
  and the term's first entry is ``BrokerStarted`` (lease tokens move to a new epoch, so a
  token handed out by a deposed leader is never valid here; workers get a fresh heartbeat
  clock to reconnect) and ``ExpireLeases``.
- **Step down**: when the lease is lost, or an append is refused or unconfirmed, or the local
  write fails: batches not logged are refused, memory is rebuilt from the store (always a
  prefix of the log here), and the node follows again; the log tells what happened to the
  append in doubt.

A fault that would make this node's state differ from the log's (an entry this machine refuses,
a damaged entry) stops the broker with exit status 1 rather than serve a diverged state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from tq.broker.bootstrap import bootstrap_secret, ensure_bootstrap_key
from tq.broker.service import BrokerService
from tq.cluster.election import Election, Leader, leader_key, parse_leader
from tq.cluster.etcd import Etcd
from tq.cluster.fetch import checkpoint_url, fetch_committed
from tq.cluster.install import discard_ready, swap_in
from tq.cluster.leader import Replicator
from tq.cluster.log import ReplicatedLog
from tq.cluster.members import MemberRecord, Membership, Role, members
from tq.cluster.replica import Replica, applied_mark
from tq.cluster.trim import LogTrimmer, TrimPolicy
from tq.config import Settings
from tq.core import commands as c
from tq.core.layout import AppliedMark
from tq.errors import LogTrimmedError, StorageError, TqError
from tq.protocol.records import ClusterMember, ClusterStatus
from tq.storage.reopen import RocksOpener

log = logging.getLogger(__name__)

#: Room for an entry's own fields beside the largest frame's commands.
ENTRY_OVERHEAD_BYTES = 1 << 20
#: How often a follower reads who leads (for the address its refusals name).
OBSERVE_INTERVAL_S = 0.25


def _client_tls(settings: Settings) -> ssl.SSLContext | None:
    """How this node verifies another node's HTTP door: None when the doors are plaintext."""
    if settings.auth.tls_cert_file is None:
        return None
    ca = settings.worker.tls_ca_file
    return ssl.create_default_context(cafile=None if ca is None else str(ca))


class ClusterNode:
    """One broker's part in the cluster (see the module docstring). ``run`` until ``stop``
    is set; ``close`` after the service drained, to hand leadership over at once."""

    def __init__(
        self,
        service: BrokerService,
        settings: Settings,
        etcd: Etcd,
        address: str,
        *,
        opener: RocksOpener | None = None,
    ) -> None:
        r = settings.raft
        self.service = service
        self.settings = settings
        self.etcd = etcd
        self.address = address
        self.node_id = settings.node_id
        self.cluster = r.cluster_name
        self.ttl_s = r.leader_lease_ttl_s
        max_entry = settings.broker.max_frame_size_bytes + ENTRY_OVERHEAD_BYTES
        self.log = ReplicatedLog(etcd, self.cluster, max_entry_bytes=max_entry)
        # The service's machine was recovered from this store (``Replica.open``).
        store = service.store
        self.replica = Replica(
            store, service.machine, applied_mark(store), write=service.commit.write
        )
        self.role = "follower"
        self.epoch: int | None = None
        self.leader: Leader | None = None
        self.leader_changes = 0
        #: Reopens this node's store after a checkpoint was swapped in (None: no catch-up).
        self.opener = opener
        #: host:port of this node's HTTP door (its checkpoints), once it listens.
        self.http_address: str | None = None
        self.membership: Membership | None = None
        self.roster: tuple[MemberRecord, ...] = ()
        #: What a fetch of another node's checkpoint presents: the bootstrap admin key (the
        #: same on every node, from auth.bootstrap_key_file or TQ_BOOTSTRAP_API_KEY) and, when
        #: the doors serve TLS, a context verifying them with worker.tls_ca_file.
        self.api_key = bootstrap_secret(settings) if settings.auth.enabled else None
        self.http_tls = _client_tls(settings)
        self._trimmer: asyncio.Task[None] | None = None
        #: Counts follower phases: a follower task applies entries only in its own phase.
        self._following = 0
        self.log_first_index = 0
        self.log_last_index = 0
        #: (when asked, the log's last index then): what a follower's freshness is proved by.
        self._seen: deque[tuple[float, int]] = deque(maxlen=1024)
        self._fresh_at = -float("inf")
        service.stale = "it has not read the log yet"
        #: What stopped this node for good (a diverged or unreadable log): exit status 1.
        self.fatal: BaseException | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._election: Election | None = None
        self._replicator: Replicator | None = None
        self._ended = asyncio.Event()  # this term is over (lease lost, append failed)
        self._why = ""

    @property
    def applied_index(self) -> int:
        """The last log entry this node's store holds."""
        if self._replicator is not None and self._replicator.applied_index:
            return self._replicator.applied_index
        return self.replica.applied_index

    async def run(self, stop: asyncio.Event) -> None:
        self.membership = Membership(
            self.etcd, self.cluster, self.node_id, self.address,
            http_address=self.http_address, ttl_s=self.ttl_s,
        )  # fmt: skip
        try:
            await self.membership.start()
        except TqError as e:  # etcd unreachable now: the record is written once it answers
            log.warning("cluster.member_record_failed node=%s error=%s", self.node_id, e.message)
            self.membership.update(applied_index=self.applied_index)
            self.membership.start_writer()
        observer = asyncio.create_task(self._observe(), name="tq-observe")
        try:
            while not stop.is_set():
                epoch = await self._follow_until_elected(stop)
                if epoch is None:
                    return
                await self._lead(epoch, stop)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (stop the broker, saying why, never serve on)
            self._die(e)
        finally:
            observer.cancel()

    def status(self) -> ClusterStatus:
        """What ``tq cluster status`` shows, from what this node last read (no etcd call)."""
        leader = self.leader
        applied = self.applied_index
        last = max(self.log_last_index, applied)
        # A leader says so once it takes writes (its term's first entry committed).
        role: Literal["leader", "follower"] = "leader" if self.service.leading else "follower"
        me = ClusterMember(
            node_id=self.node_id, address=self.address, role=role,
            applied_index=applied, lag=last - applied, updated_at=time.time(),
        )  # fmt: skip
        nodes = [me] + [
            ClusterMember(
                node_id=r.node_id, address=r.address, role=r.role.value,
                applied_index=r.applied_index, lag=max(0, last - r.applied_index),
                updated_at=r.updated_at,
            )
            for r in self.roster
            if r.node_id != self.node_id
        ]  # fmt: skip
        return ClusterStatus(
            enabled=True, name=self.cluster, node_id=self.node_id, role=role,
            leader_id=None if leader is None else leader.node_id,
            leader_address=None if leader is None else leader.address,
            epoch=None if leader is None else leader.epoch,
            applied_index=applied, log_first_index=self.log_first_index,
            log_last_index=last, leader_changes=self.leader_changes,
            nodes=sorted(nodes, key=lambda n: n.node_id),
        )  # fmt: skip

    def _die(self, e: BaseException) -> None:
        why = e.message if isinstance(e, TqError) else f"{type(e).__name__}: {e}"
        log.critical("cluster.node_stopped node=%s error=%s", self.node_id, why)
        self.fatal = e
        if self.on_fatal is not None:
            self.on_fatal(e)

    # ------------------------------------------------------------------ following

    async def _follow_until_elected(self, stop: asyncio.Event) -> int | None:
        """Apply the log and campaign; the epoch once elected (None: asked to stop)."""
        self.role = "follower"
        election = Election(
            self.etcd, self.cluster, self.node_id, self.address, ttl_s=self.ttl_s,
            on_lost=self._lost,
        )  # fmt: skip
        self._election = election
        self._following += 1
        follower = asyncio.create_task(self._follow(self._following), name="tq-follow")
        campaign = asyncio.create_task(self._campaign(election), name="tq-campaign")
        stopping = asyncio.create_task(stop.wait(), name="tq-stop")
        try:
            await asyncio.wait({follower, campaign, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # This follower may apply nothing more, even if its cancellation is slow to land
            # (a watch stuck in the etcd client): a leader's own entries must never be
            # applied a second time over the state that produced them.
            self._following += 1
            for task in (follower, stopping):
                task.cancel()
            if not campaign.done():
                campaign.cancel()
            await asyncio.wait({follower, stopping, campaign}, timeout=5.0)
        if follower.done() and not follower.cancelled() and follower.exception() is not None:
            await election.stop()
            raise follower.exception()  # type: ignore[misc]
        if not campaign.done() or campaign.cancelled() or stop.is_set():
            await self._quit(election)
            return None
        return campaign.result()

    async def _follow(self, generation: int) -> None:
        while self._following == generation:
            try:
                start = self.replica.applied_index + 1
                async with contextlib.aclosing(self.log.follow(start)) as entries:
                    async for index, data in entries:
                        if self._following != generation:
                            return  # the follower phase is over
                        self._apply(index, data)
            except LogTrimmedError as e:
                await self._install_checkpoint(e.first_index, generation)

    async def _install_checkpoint(self, first: int, generation: int) -> None:
        """Too far behind (the log starts past what this node applied): fetch a checkpoint
        of a node that applied more (the leader's, else the most advanced), verify it, swap
        it in for this node's store, and follow the log after it. A failed try is logged
        and tried again (a second from now); the node serves nothing stale meanwhile (its
        reads are refused past the staleness bound)."""
        have = self.replica.applied_index
        log.warning(
            "cluster.behind node=%s applied=%d log_first=%d: installing a checkpoint",
            self.node_id, have, first,
        )  # fmt: skip
        while True:
            try:
                await self._fetch_and_swap(first, generation)
                return
            except (TqError, OSError) as e:
                why = e.message if isinstance(e, TqError) else str(e)
                log.warning("cluster.checkpoint_failed node=%s error=%s", self.node_id, why)
                await asyncio.sleep(1.0)

    async def _fetch_and_swap(self, first: int, generation: int) -> None:
        if self.opener is None:
            raise StorageError("this node cannot install a checkpoint (no store opener)")
        roster = await members(self.etcd, self.cluster)
        sources = sorted(
            (r for r in roster if r.node_id != self.node_id and r.http_address
             and r.applied_index >= first - 1),
            key=lambda r: (r.role is not Role.LEADER, -r.applied_index),
        )  # fmt: skip
        if not sources:
            raise StorageError(
                f"no node with an HTTP door has applied entry {first - 1} yet to serve a "
                "checkpoint (api.rest_enabled must be on for the nodes to fetch from each other)"
            )
        source = sources[0]
        assert source.http_address is not None
        store_dir = Path(self.opener.path)
        url = checkpoint_url(source.http_address, tls=self.http_tls is not None)
        manifest = await fetch_committed(
            self.log, url, store_dir,
            have=AppliedMark(self.replica.applied_index, self.replica.applied_epoch),
            api_key=self.api_key, tls=self.http_tls,
        )  # fmt: skip
        service = self.service
        await service.commit.idle()  # no fsync of the old store is running
        if self._following != generation:  # this node leads now: its store is not to swap
            discard_ready(store_dir)
            return
        service.store.close()
        swap_in(store_dir)
        store = self.opener.open(read_only=False)
        replica = Replica.open(store, write=service.commit.write)
        service.adopt(store, replica.machine)
        self.replica = replica
        log.info(
            "cluster.checkpoint_installed node=%s from=%s applied=%d", self.node_id,
            source.node_id, manifest.applied_index,
        )  # fmt: skip

    def _apply(self, index: int, data: bytes) -> None:
        events = self.replica.apply_entry(index, data)
        if events is not None:
            self.service.follow(self.replica.machine, events)

    async def _observe(self) -> None:
        """Keep who leads (the address a follower's refusals name) and the log's extent
        current, for refusals and ``status``."""
        key = leader_key(self.cluster)
        while True:
            asked = time.monotonic()
            try:
                held = await self.etcd.get(key)
                leader = None if held is None else parse_leader(held.value, held.create_revision)
                self.log_last_index = await self.log.last_index()
                self.log_first_index = await self.log.first_index()
                self._seen.append((asked, self.log_last_index))
                self.roster = tuple(await members(self.etcd, self.cluster))
            except TqError:
                leader = None
            self._check_fresh()
            if self.membership is not None:
                leading = self.service.leading
                self.membership.update(
                    applied_index=self.applied_index,
                    role=Role.LEADER if leading else Role.FOLLOWER,
                )
            if leader != self.leader:
                self.leader = leader
                log.info(
                    "cluster.leader_seen node=%s leader=%s epoch=%s", self.node_id,
                    None if leader is None else leader.node_id,
                    None if leader is None else leader.epoch,
                )  # fmt: skip
            if self.role != "leader":
                mine = leader is not None and leader.node_id == self.node_id
                self.service.leader_address = None if leader is None or mine else leader.address
            await asyncio.sleep(OBSERVE_INTERVAL_S)

    def _check_fresh(self) -> None:
        """A follower vouches for its reads while it has applied everything etcd held at most
        ``raft.leader_lease_ttl_s`` ago (its staleness bound); past that (behind, or cut off
        from etcd) its reads are refused with NOT_LEADER until it catches up."""
        applied = self.applied_index
        seen = self._seen
        while seen and seen[0][1] <= applied:
            self._fresh_at = seen.popleft()[0]
        behind = time.monotonic() - self._fresh_at
        if self.role == "leader" or behind <= self.ttl_s:
            self.service.stale = None
        else:
            self.service.stale = (
                f"it has not confirmed for {behind:.1f} s that it applied the whole log "
                f"(bound {self.ttl_s} s; applied {applied}, log at {self.log_last_index})"
            )

    async def _campaign(self, election: Election) -> int:
        backoff = 0.1
        while True:
            try:
                return await election.campaign()
            except TqError as e:  # etcd unreachable: keep trying, the follower keeps serving
                log.warning("cluster.campaign_failed node=%s error=%s", self.node_id, e.message)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    # ------------------------------------------------------------------ leading

    async def _lead(self, epoch: int, stop: asyncio.Event) -> None:
        election = self._election
        assert election is not None
        self._ended.clear()
        self._why = ""
        try:
            # No older leader can append now: what the log holds is final until we append.
            last = await self.log.last_index()
            while self.replica.applied_index < last:
                for index, data in await self.log.read(self.replica.applied_index + 1):
                    self._apply(index, data)
            if last < self.replica.applied_index:
                # The store holds more than etcd (a restore from a checkpoint onto an empty
                # etcd): the log goes on after it; other nodes install a checkpoint first.
                log.warning(
                    "cluster.log_behind_store node=%s log_last=%d applied=%d", self.node_id,
                    last, self.replica.applied_index,
                )  # fmt: skip
                self.log.continue_after(self.replica.applied_index)
        except (TqError, OSError) as e:
            if isinstance(e, StorageError) and not isinstance(e, LogTrimmedError):
                raise
            # etcd unreachable, or this node is so far behind that it needs a checkpoint
            # first (its follower does that): not the leader this time.
            log.warning("cluster.catch_up_failed node=%s error=%s", self.node_id, e)
            await self._quit(election)
            return
        self.epoch = epoch
        self.role = "leader"
        self.leader_changes += 1
        self.leader = Leader(self.node_id, self.address, epoch)
        replicator = Replicator(
            self.log, epoch, self.service.commit.write, self._append_failed,
            max_entry_bytes=self.log.max_entry_bytes,
        )  # fmt: skip
        replicator.applied_index = self.replica.applied_index
        if self.service.instruments is not None:
            replicator.on_append = self.service.instruments.on_append
        self._replicator = replicator
        replicator.start()
        now = time.time()
        try:
            await self.service.lead(
                replicator, self.address, [c.BrokerStarted(now), c.ExpireLeases(now)]
            )
        except TqError as e:
            self._append_failed(e)
        if self.service.leading:
            log.info(
                "cluster.leading node=%s epoch=%d applied=%d", self.node_id, epoch,
                self.replica.applied_index,
            )  # fmt: skip
            r = self.settings.raft
            trimmer = LogTrimmer(
                self.etcd, self.cluster, self.log, [m.node_id for m in r.members],
                TrimPolicy(max_lag=r.snapshot_threshold),
            )  # fmt: skip
            self._trimmer = asyncio.create_task(trimmer.run(r.log_trim_interval_s))
            try:
                await ensure_bootstrap_key(self.service, self.settings)
            except TqError as e:
                why = e.message
                log.warning("cluster.bootstrap_key_failed node=%s error=%s", self.node_id, why)
        stopping = asyncio.create_task(stop.wait())
        ended = asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            ended.cancel()
        if stop.is_set() and not self._ended.is_set():
            return  # leading on while the broker drains; ``close`` hands over
        await self._step_down(election, self._why or election.lost_reason)

    def _lost(self, reason: str) -> None:
        self._why = self._why or f"lost the leader lease: {reason}"
        self._ended.set()

    def _append_failed(self, error: BaseException) -> None:
        why = error.message if isinstance(error, TqError) else str(error)
        self._why = self._why or f"log append failed: {why}"
        self._ended.set()

    def _stop_trimming(self) -> None:
        trimmer, self._trimmer = self._trimmer, None
        if trimmer is not None:
            trimmer.cancel()

    async def _step_down(self, election: Election, why: str) -> None:
        log.warning("cluster.step_down node=%s epoch=%s reason=%s", self.node_id, self.epoch, why)
        self._stop_trimming()
        replicator, self._replicator = self._replicator, None
        if replicator is not None:
            await replicator.stop()
        # Rebuilt from the store: everything applied here but not logged is gone.
        self.replica = Replica.open(self.service.store, write=self.service.commit.write)
        self.service.step_down(self.replica.machine, f"this node stopped leading ({why})")
        self.role = "follower"
        self.epoch = None
        await self._quit(election)

    async def _quit(self, election: Election) -> None:
        """End a candidacy or a term: the key released if still ours, so another node need
        not wait for the lease to expire (bounded: etcd may be what failed)."""
        with contextlib.suppress(TqError, TimeoutError, OSError):
            await asyncio.wait_for(election.resign(), self.ttl_s)
        await election.stop()

    async def close(self) -> None:
        """After the broker drained: stop appending and hand leadership over."""
        self._stop_trimming()
        if self.membership is not None:  # bounded: etcd may be what is gone
            with contextlib.suppress(TqError, TimeoutError):
                await asyncio.wait_for(self.membership.stop(), self.ttl_s)
        replicator, self._replicator = self._replicator, None
        if replicator is not None:
            await replicator.stop()
        if self._election is not None:
            await self._quit(self._election)
        self.service.leading = False
        await self.etcd.close()
