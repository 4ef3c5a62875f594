"""A local etcd member the broker starts and supervises (``raft.manage_local_etcd``), so that a
cluster node is one command: each node of ``raft.members`` runs one member at its own host
(the host of its ``address``), on ``raft.etcd_client_port`` and ``raft.etcd_peer_port``.

The member is started with the flags tq needs (``--snapshot-count 5000``: etcd's default lets
its memory grow to many GB under a stream of appends; ``--max-request-bytes`` above the
largest log entry), its data under ``raft.etcd_data_dir`` (default ``<data_dir>/etcd``) and its
log in ``etcd.log`` beside it. A member that exits is started again (backoff up to 10 s); the
broker stops it when it stops. On a restart etcd reads its membership from its data dir and
ignores the initial-cluster flags, as etcd documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from tq.config import Settings
from tq.errors import ConfigError

log = logging.getLogger(__name__)

#: Room above the largest log entry in etcd's request limit.
REQUEST_ROOM_BYTES = 2 << 20
RESTART_MAX_S = 10.0
#: prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def managed_endpoints(settings: Settings) -> list[str]:
    """The etcd endpoints of a cluster whose nodes each run a managed member."""
    port = settings.raft.etcd_client_port
    return [f"http://{_host(m.address)}:{port}" for m in settings.raft.members]


def etcd_endpoints(settings: Settings) -> list[str]:
    """Where this node's etcd client goes: ``raft.etcd_endpoints``, else (with managed
    members) every member's client URL, its own first."""
    r = settings.raft
    if r.etcd_endpoints:
        return list(r.etcd_endpoints)
    endpoints = managed_endpoints(settings)
    mine = next(
        (e for e, m in zip(endpoints, r.members, strict=True) if m.node_id == settings.node_id),
        None,
    )
    return ([mine] if mine else []) + [e for e in endpoints if e != mine]


@dataclass(frozen=True)
class MemberPlan:
    """How this node's member is started."""

    argv: list[str]
    data_dir: Path
    log_file: Path
    client_url: str


def plan(settings: Settings) -> MemberPlan:
    """The command line of this node's etcd member; ConfigError when it cannot be run (no
    etcd executable, this node not among ``raft.members``)."""
    r = settings.raft
    me = next((m for m in r.members if m.node_id == settings.node_id), None)
    if me is None:
        raise ConfigError(
            f"raft.manage_local_etcd: node {settings.node_id!r} is not one of raft.members, "
            "so its etcd member has no address"
        )
    binary = shutil.which(r.etcd_binary)
    if binary is None:
        raise ConfigError(
            f"raft.etcd_binary: {r.etcd_binary!r} is not an executable on PATH (Debian: "
            "apt-get install etcd-server), and raft.manage_local_etcd needs it"
        )
    host = _host(me.address)
    client = f"http://{host}:{r.etcd_client_port}"
    peer = f"http://{host}:{r.etcd_peer_port}"
    initial = ",".join(
        f"{m.node_id}=http://{_host(m.address)}:{r.etcd_peer_port}" for m in r.members
    )
    data_dir = settings.etcd_data_dir
    log_file = data_dir.parent / "etcd.log"
    limit = settings.broker.max_frame_size_bytes + (1 << 20) + REQUEST_ROOM_BYTES
    argv = [
        binary,
        "--name", me.node_id,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial,
        "--initial-cluster-token", f"tq-{r.cluster_name}",
        "--initial-cluster-state", "new",
        "--snapshot-count", "5000",
        "--max-request-bytes", str(limit),
        "--logger", "zap",
        "--log-outputs", str(log_file),
        "--log-level", "warn",
    ]  # fmt: skip
    return MemberPlan(argv, data_dir, log_file, client)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the broker dies (even by SIGKILL), so a node's
    member never outlives it holding its ports (Linux ``PR_SET_PDEATHSIG``; elsewhere the
    broker's own ``stop`` is all there is)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ManagedEtcd:
    """This node's etcd member: ``start`` it, ``run`` (supervise) it, ``stop`` it."""

    def __init__(self, member: MemberPlan) -> None:
        self.plan = member
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self) -> None:
        self.plan.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            *self.plan.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.info(
            "etcd.started pid=%d client=%s data_dir=%s log=%s", self._proc.pid,
            self.plan.client_url, self.plan.data_dir, self.plan.log_file,
        )  # fmt: skip

    async def run(self) -> None:
        """Start the member again whenever it exits (until ``stop``)."""
        backoff = 0.5
        while not self.stopping():
            proc = self._proc
            if proc is None:
                return
            started = asyncio.get_running_loop().time()
            code = await proc.wait()
            if self.stopping():
                return
            if asyncio.get_running_loop().time() - started > 60:
                backoff = 0.5  # it ran a while: this is a new fault, not a crash loop
            log.warning(
                "etcd.exited code=%s restart_in=%.1fs log=%s", code, backoff, self.plan.log_file
            )
            await asyncio.sleep(backoff)
            backoff = min(RESTART_MAX_S, backoff * 2)
            if not self.stopping():  # ``stop`` may have come during the sleep
                await self.start()

    def stopping(self) -> bool:
        return self._stopping

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("etcd.stopped code=%s", proc.returncode)
