"""The broker process: the composition root. It alone wires the parts together: store,
recovery, service, the TCP door, the management doors of ``tq.api`` (REST + WebSocket, gRPC,
Prometheus; each imported only when enabled, so a broker without one pays nothing for it) and
the background jobs.

Start: refuse an exposed broker that authenticates nobody (``tq.broker.exposure``), load the
TLS certificate if one is configured (``tq.broker.tls``; SIGHUP reloads it), open the data dir
(read-only on a full disk: reads are served, writes wait for space), rebuild the state
machine, make ``BrokerStarted`` and ``ExpireLeases`` durable (tasks whose lease is gone return
to pending), listen, then write the ready file. A storage failure
later is an outage of writes, not of the broker (``tq.broker.storage_guard``). Stop on
SIGTERM/SIGINT: stop accepting, answer parked claims, make everything applied durable, send
the last replies, close connections, close the store cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from tq import eventloop
from tq.broker.bootstrap import ensure_bootstrap_key
from tq.broker.exposure import check_exposure
from tq.broker.jobs import lease_monitor, maintenance, relaxed_sync, retention, scheduler
from tq.broker.lifetimes import expirer, result_purger
from tq.broker.limits import nofile_needed, raise_nofile_limit
from tq.broker.node import ClusterNode
from tq.broker.schedules import schedule_runner
from tq.broker.service import BrokerService
from tq.broker.storage_guard import StorageGuard
from tq.broker.tcp import DOOR, BrokerProtocol, Connections
from tq.broker.tcp_tls import TlsListener, bind
from tq.broker.tls import ServerTls
from tq.cluster.checkpoint import Snapshot, clear_checkpoints, take_checkpoint_async
from tq.cluster.etcd import Etcd
from tq.cluster.etcd_member import ManagedEtcd, etcd_endpoints, plan
from tq.cluster.install import finish_install
from tq.cluster.replica import Replica
from tq.config import Settings, SyncMode
from tq.errors import ErrorCode, StorageError, TqError, UnavailableError
from tq.storage.recovery import recover
from tq.storage.reopen import RocksOpener, open_at_start
from tq.storage.rocksdb import RocksTuning

log = logging.getLogger(__name__)
_MB = 1024 * 1024
#: A cluster node's store and its checkpoints being served, under persistence.data_dir.
STORE_DIR = "store"
CHECKPOINTS_DIR = "checkpoints"
#: What the HTTP door streams at GET /v1/cluster/checkpoint (a cluster node only).
CheckpointSource = Callable[[], Awaitable[Snapshot]]


class Listener(Protocol):
    """The TCP door's listener: an ``asyncio.Server``, or a ``TlsListener`` when TLS is on."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class FrontDoor(Protocol):
    """A management door: ``start`` binds and returns the port in use; ``stop`` closes."""

    name: str
    port: int

    async def start(self) -> int: ...

    async def stop(self) -> None: ...


def management_doors(
    service: BrokerService,
    settings: Settings,
    tls: ServerTls | None = None,
    checkpoint: CheckpointSource | None = None,
) -> list[FrontDoor]:
    """The enabled management doors, in start order (imported here, only when enabled); with
    ``tls``, each serves TLS only; ``checkpoint`` (a cluster node's) is served by the HTTP
    door at ``GET /v1/cluster/checkpoint``."""
    doors: list[FrontDoor] = []
    if settings.monitoring.prometheus_enabled:
        from tq.api.metrics import MetricsServer  # noqa: PLC0415 - only when enabled

        doors.append(MetricsServer(service, settings, tls=tls))
    if settings.api.http_enabled:
        from tq.api.http import HttpServer  # noqa: PLC0415 - only when enabled

        doors.append(HttpServer(service, settings, tls=tls, checkpoint=checkpoint))
    if settings.api.grpc_enabled:
        from tq.api.grpc import GrpcServer  # noqa: PLC0415 - only when enabled

        doors.append(GrpcServer(service, settings, tls=tls))
    return doors


async def listen_tcp(
    service: BrokerService, conns: Connections, tls: ServerTls | None
) -> tuple[Listener, int]:
    """The TCP door's listener and its port: plaintext, or TLS only (``tq.broker.tcp_tls``)."""
    b = service.settings.broker
    if tls is None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: BrokerProtocol(service, conns), b.host, b.port, backlog=1024
        )
        return server, server.sockets[0].getsockname()[1]
    sock = bind(b.host, b.port)
    listener = TlsListener(
        [sock], tls.tcp_context, lambda: BrokerProtocol(service, conns), service.door_stats(DOOR),
        handshake_timeout=b.handshake_timeout_s, max_handshaking=b.max_handshaking,
    )  # fmt: skip
    listener.start()
    return listener, sock.getsockname()[1]


async def start_doors(doors: list[FrontDoor]) -> list[FrontDoor]:
    """Start each door; on a failure stop those already started and raise."""
    started: list[FrontDoor] = []
    try:
        for door in doors:
            door.port = await door.start()
            log.info("api.listening name=%s port=%d", door.name, door.port)
            started.append(door)
    except BaseException:
        for door in reversed(started):
            with contextlib.suppress(Exception):
                await door.stop()
        raise
    return started


def run_broker(settings: Settings, *, ready_file: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the process exit status (0 clean, 1 storage failure)."""
    return eventloop.run(serve(settings, ready_file=ready_file))


async def serve(settings: Settings, *, ready_file: Path | None = None) -> int:
    loop = asyncio.get_running_loop()
    p, b = settings.persistence, settings.broker
    t0 = time.perf_counter()
    check_exposure(settings)  # before anything is opened: a refusal leaves nothing behind
    tls = ServerTls.from_settings(settings.auth)
    raise_nofile_limit(nofile_needed(b))  # before RocksDB opens its files
    tuning = RocksTuning(
        write_buffer_mb=max(1, p.write_buffer_size_bytes // _MB),
        block_cache_mb=max(1, p.block_cache_size_bytes // _MB),
        max_background_jobs=p.max_background_jobs,
    )
    clustered = settings.raft.enabled
    # A cluster node keeps its store in <data_dir>/store, so that a checkpoint can replace the
    # whole directory (beside it: checkpoints being served, a managed etcd member's data).
    store_dir = p.data_dir / STORE_DIR if clustered else p.data_dir
    if clustered:
        store_dir.mkdir(parents=True, exist_ok=True)
        finished = finish_install(store_dir)  # a swap a crash interrupted, finished
        if finished:
            log.info("cluster.checkpoint_install_finished %s", finished)
        clear_checkpoints(p.data_dir / CHECKPOINTS_DIR)
    opener = RocksOpener(store_dir, tuning)
    opened = open_at_start(opener)
    service: BrokerService | None = None
    node: ClusterNode | None = None
    member: ManagedEtcd | None = None
    try:
        stop = asyncio.Event()
        if clustered:
            # A cluster node's store is a prefix of the log: no local repairs, no start batch
            # (the elected leader's first entry does that for every node).
            if opened.read_only_because is not None:
                raise StorageError(f"cannot join the cluster: {opened.read_only_because}")
            service = BrokerService(
                settings, opened.store, Replica.open(opened.store).machine, cluster=True,
                node_id=settings.node_id,
            )  # fmt: skip
            service.commit.relaxed = True  # the log in etcd is what makes a change durable
            guard = None
        else:
            rec = recover(opened.store, time.time())
            service = BrokerService(settings, opened.store, rec.machine)
            guard = StorageGuard(service, opener)
            await guard.start(rec.repairs, opened.read_only_because)
            await ensure_bootstrap_key(service, settings)
            log.info(
                "broker.recovered data_dir=%s tasks=%d seconds=%.3f",
                p.data_dir, rec.tasks, time.perf_counter() - t0,
            )  # fmt: skip
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        conns = Connections(service)
        server, port = await listen_tcp(service, conns, tls)
        log.info(
            "broker.listening host=%s port=%d node=%s tls=%s", b.host, port, service.node_id,
            "off" if tls is None else f"on client_certs={tls.client_auth}",
        )  # fmt: skip
        if clustered:
            if settings.raft.manage_local_etcd:
                member = ManagedEtcd(plan(settings))
                await member.start()
            node = _cluster_node(service, settings, port, stop, opener)
        if tls is not None:
            # A renewed certificate is taken without a restart: new handshakes use it.
            loop.add_signal_handler(signal.SIGHUP, tls.reload)
        checkpoint = None
        if node is not None:
            checkpoint = _checkpoints(service, p.data_dir / CHECKPOINTS_DIR)
        fronts = await start_doors(management_doors(service, settings, tls, checkpoint))
        if node is not None:
            http = next((f for f in fronts if f.name == "rest"), None)
            if http is not None:
                node.http_address = f"{settings.api.rest_host}:{http.port}"
        # Everything loaded so far (modules, FastAPI's and grpc's objects, the recovered
        # state) lives for the process: keep it out of every later garbage collection.
        gc.freeze()
        ports = {"port": port, **{f.name + "_port": f.port for f in fronts}}
        if ready_file is not None:
            _write_ready(ready_file, b.host, ports)
        async with asyncio.TaskGroup() as tg:
            jobs = [
                tg.create_task(lease_monitor(service)),
                tg.create_task(scheduler(service)),
                tg.create_task(schedule_runner(service)),
                tg.create_task(maintenance(service, conns.close_idle)),
                tg.create_task(retention(service)),
                tg.create_task(result_purger(service)),
                tg.create_task(expirer(service)),
            ]
            if guard is not None:  # a cluster node has none: a storage failure stops it
                jobs.append(tg.create_task(guard.run()))
            if p.sync_mode is SyncMode.RELAXED or clustered:
                jobs.append(tg.create_task(relaxed_sync(service)))
            if node is not None:
                jobs.append(tg.create_task(node.run(stop)))
            if member is not None:
                jobs.append(tg.create_task(member.run()))
            await stop.wait()
            log.info("broker.stopping")
            for job in jobs:
                job.cancel()
        for front in reversed(fronts):
            with contextlib.suppress(Exception):
                await front.stop()
        await _shutdown(service, server, conns, b.shutdown_timeout_s)
        if node is not None:
            await node.close()
            return 1 if node.fatal is not None or service.failed is not None else 0
        return 1 if service.failed is not None else 0
    finally:
        if member is not None:  # after the node handed over: its etcd goes last
            await member.stop()
        try:  # the guard may have swapped stores during an outage: close the current one
            (opened.store if service is None else service.store).close()
        except StorageError as e:
            log.error("broker.close_failed error=%s", e)
        log.info("broker.stopped")


async def _shutdown(
    service: BrokerService, server: Listener, conns: Connections, timeout: float
) -> None:
    server.close()
    # Stop reading requests too: one applied after the drain below would be made durable
    # but its reply lost with the connection.
    for conn in list(conns.open):
        conn.stop()
    service.cancel_waiters()
    with contextlib.suppress(TqError, TimeoutError):
        async with asyncio.timeout(timeout):
            await service.drain()
            await asyncio.sleep(0)  # let the replies of the last batch reach their buffers
    conns.close_all(UnavailableError("broker shutting down", ErrorCode.SHUTTING_DOWN))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await server.wait_closed()
    with contextlib.suppress(StorageError):
        await service.close()


def _checkpoints(service: BrokerService, work_dir: Path) -> CheckpointSource:
    """A checkpoint of the store the service uses when asked (a swap may replace it)."""

    def take() -> Awaitable[Snapshot]:
        return take_checkpoint_async(service.store, work_dir)

    return take


def _cluster_node(
    service: BrokerService,
    settings: Settings,
    port: int,
    stop: asyncio.Event,
    opener: RocksOpener,
) -> ClusterNode:
    """This broker's cluster node, reached at ``raft.advertise_address`` (else the TCP door's
    host and the port it got). A fault that makes the node stop (a diverged log, a failed
    local write) stops the broker, with exit status 1."""
    r = settings.raft
    address = r.advertise_address or f"{settings.broker.host}:{port}"
    etcd = Etcd(etcd_endpoints(settings), timeout_s=r.etcd_timeout_s)
    node = ClusterNode(service, settings, etcd, address, opener=opener)

    def storage_failed(error: BaseException) -> None:
        log.critical("storage.failed error=%s (a cluster node stops: the log keeps it all)", error)
        node.fatal = error
        stop.set()

    node.on_fatal = lambda _: stop.set()
    service.cluster_view = node.status
    service.on_storage_failure = storage_failed
    return node


def _write_ready(path: Path, host: str, ports: dict[str, int]) -> None:
    """Atomically: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"host": host, **ports, "pid": os.getpid()}))
    tmp.replace(path)
