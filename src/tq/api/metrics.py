"""Prometheus metrics on ``monitoring.prometheus_port``: ``GET /metrics`` in the broker's loop.

Theory of operation: nothing here runs per task. Counters the broker keeps anyway (the state
machine's lifetime totals, live counts, queue depths, group-commit counters) are read when
Prometheus scrapes, by one custom collector; the few histograms (``tq.broker.instruments``)
are fed once per request or per batch. The registry is private (no global state), and a tiny
HTTP/1.1 server on asyncio streams serves it: no thread, no framework; with the broker's TLS
context when ``auth.tls_cert_file`` is set (https, client certificates as on every door). With
auth enabled and ``auth.protect_metrics``, a scrape presents a read key as
``Authorization: Bearer <key>`` (the service judges it: ``BrokerService.may_scrape``);
otherwise /metrics stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import NamedTuple

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from tq.api.credentials import API_KEY_HEADER, AUTHORIZATION, presented_key
from tq.broker.instruments import Histogram, Instruments
from tq.broker.service import BrokerService, DoorStats
from tq.broker.tls import ServerTls
from tq.config import Settings
from tq.core.flow import tokens_at
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.core.model import DEFAULT_QUEUE, PriorityTier, TaskState
from tq.errors import ConfigError, RateLimitedError, TqError
from tq.version import __version__

log = logging.getLogger(__name__)

#: Machine counter -> ``tq_tasks_total{outcome}``.
OUTCOMES = {
    "submitted": "submitted",
    "claimed": "claimed",
    "completed": "completed",
    "failed_attempts": "failed",
    "retried": "retried",
    "dead_lettered": "dead_lettered",
    "cancelled": "cancelled",
    "purged": "purged",
    "results_expired": "results_expired",
    "expired": "expired",
}
MAX_QUEUES_REMEMBERED = 10_000
TIERS = tuple(tier.label for tier in PriorityTier)  # low, normal, high: as queue_depths()


class BrokerCollector(Collector):
    """Every tq_* metric, read from the service when Prometheus scrapes."""

    def __init__(self, service: BrokerService, instruments: Instruments) -> None:
        self.service = service
        self.instruments = instruments
        self._queues_seen = {DEFAULT_QUEUE}

    def describe(self) -> Iterable[Metric]:
        return ()  # names are fixed by this module; registering must not scrape

    def collect(self) -> Iterable[Metric]:
        yield from self._broker()
        yield from self._tasks()
        yield from self._queues()
        yield from self._schedules()
        yield from self._workers_and_connections()
        yield from self._histograms()
        yield from self._storage()
        yield from self._cluster()

    def _broker(self) -> Iterable[Metric]:
        s = self.service
        yield InfoMetricFamily(
            "tq_broker", "This broker.", value={"node_id": s.node_id, "version": __version__}
        )
        yield GaugeMetricFamily(
            "tq_broker_start_time_seconds", "When the broker started (Unix time).", s.started
        )
        yield GaugeMetricFamily(
            "tq_broker_ready", "1 while the broker accepts changes (storage healthy).", s.ready()
        )
        yield CounterMetricFamily(
            "tq_auth_key_verifications",
            "bcrypt verifications of presented API keys: cache misses (once per key while it "
            "stays cached), never one per request.",
            s.keyring.bcrypt_runs,
        )

    def _tasks(self) -> Iterable[Metric]:
        m = self.service.machine
        totals = self.service.totals()  # as of the latest durable batch: they never go down
        tasks = CounterMetricFamily(
            "tq_tasks",
            "Task lifecycle events since the data directory was created, by outcome "
            "(failed counts failed attempts, lost leases included).",
            labels=["outcome"],
        )
        for field, outcome in OUTCOMES.items():
            tasks.add_metric([outcome], getattr(totals, field))
        yield tasks
        yield CounterMetricFamily(
            "tq_leases_expired", "Leases that ran out (the task went back to the queue).",
            totals.leases_expired,
        )  # fmt: skip
        yield CounterMetricFamily(
            "tq_retries", "Failed attempts scheduled to run again.", totals.retried
        )
        yield CounterMetricFamily(
            "tq_dead_letters", "Tasks moved to the dead-letter queue.", totals.dead_lettered
        )
        counts = m.counts()
        for name, state, doc in (
            ("pending", TaskState.PENDING, "Tasks ready to run, waiting for a worker."),
            ("in_progress", TaskState.IN_PROGRESS, "Tasks a worker holds under a lease."),
            ("scheduled", TaskState.SCHEDULED, "Tasks delayed or waiting on dependencies."),
            ("retry_waiting", TaskState.FAILED, "Failed attempts waiting for their retry."),
        ):
            yield GaugeMetricFamily(f"tq_tasks_{name}", doc, counts[state])
        yield GaugeMetricFamily(
            "tq_tasks_dead_letter",
            "Tasks in the dead-letter queue (a storage estimate).",
            self.service.store.approximate_count(Family.DEAD_LETTER),
        )

    def _queues(self) -> Iterable[Metric]:
        m = self.service.machine
        depth = GaugeMetricFamily(
            "tq_broker_queue_depth",
            "Pending tasks per queue and priority tier.",
            labels=["queue", "tier"],
        )
        depths = m.queue_depths()
        # A queue that empties stays, at 0: a vanished series reads as "no data", not empty.
        if len(self._queues_seen) < MAX_QUEUES_REMEMBERED:
            self._queues_seen.update(depths)
        for queue in sorted(self._queues_seen | depths.keys()):
            for tier, n in zip(TIERS, depths.get(queue, (0, 0, 0)), strict=True):
                depth.add_metric([queue, tier], n)
        yield depth
        live = GaugeMetricFamily(
            "tq_broker_queue_tasks", "Live tasks per queue and state.", labels=["queue", "state"]
        )
        for queue, by_state in m.queue_counts().items():
            for state, n in by_state.items():
                live.add_metric([queue, state.value], n)
        yield live
        yield from self._flow(m)

    def _flow(self, m: Machine) -> Iterable[Metric]:
        """Flow control: paused queues (1) beside the other queues seen (0); per limit, its
        tasks in progress and, for a rate, the tokens its bucket holds now."""
        paused = m.paused()
        gauge = GaugeMetricFamily(
            "tq_broker_queue_paused",
            "1 while a queue is paused (takes submits, hands out nothing), else 0.",
            labels=["queue"],
        )
        if len(self._queues_seen) < MAX_QUEUES_REMEMBERED:  # resumed, it shows 0: not gone
            self._queues_seen.update(paused)
        for queue in sorted(self._queues_seen | paused.keys()):
            gauge.add_metric([queue], 1 if queue in paused else 0)
        yield gauge
        limits = m.limits()
        if not limits:
            return
        running = GaugeMetricFamily(
            "tq_limit_running",
            "Tasks in progress that count against a concurrency cap or rate limit.",
            labels=["scope", "name"],
        )
        tokens = GaugeMetricFamily(
            "tq_limit_tokens",
            "Claims a task type's rate-limit bucket allows at once now.",
            labels=["task_type"],
        )
        now = time.time()
        for limit in limits:
            if limit.scope == "queue":
                running.add_metric([limit.scope, limit.name], m.running_in(limit.name))
            else:
                running.add_metric([limit.scope, limit.name], m.running_of_type(limit.name) or 0)
            if limit.rate is not None:
                tokens.add_metric([limit.name], tokens_at(limit, now))
        yield running
        yield tokens

    def _schedules(self) -> Iterable[Metric]:
        schedules = self.service.machine.schedules()
        gauge = GaugeMetricFamily(
            "tq_schedules", "Cron and interval schedules, by state.", labels=["state"]
        )
        paused = sum(s.paused for s in schedules)
        gauge.add_metric(["active"], len(schedules) - paused)
        gauge.add_metric(["paused"], paused)
        yield gauge
        yield CounterMetricFamily(
            "tq_schedule_firings",
            "Tasks submitted by schedule firings since this broker started.",
            self.instruments.schedule_firings,
        )

    def _workers_and_connections(self) -> Iterable[Metric]:
        s = self.service
        workers = s.machine.workers()
        alive_since = time.time() - s.dead_after
        yield GaugeMetricFamily(
            "tq_workers_connected",
            "Registered workers whose heartbeats are current.",
            sum(1 for w in workers if w.last_heartbeat >= alive_since),
        )
        yield GaugeMetricFamily(
            "tq_workers_registered", "Registered workers, dead or alive.", len(workers)
        )
        yield GaugeMetricFamily(
            "tq_claim_waiters", "Claims parked in a long poll, waiting for work.", len(s.waiters)
        )
        doors = {"tcp": DoorStats(), **s.doors}
        conns = GaugeMetricFamily(
            "tq_connections", "Established client connections (handshake done).", labels=["door"]
        )
        handshaking = GaugeMetricFamily(
            "tq_connections_handshaking",
            "Accepted connections still before their handshake (HELLO).",
            labels=["door"],
        )
        refused = CounterMetricFamily(
            "tq_connections_refused",
            "Handshakes refused at the connection limit (broker.max_connections).",
            labels=["door"],
        )
        dropped = CounterMetricFamily(
            "tq_connections_dropped_in_handshake",
            "Connections closed before their HELLO: timeout (broker.handshake_timeout_s) or "
            "evicted (broker.max_handshaking full when a newer one arrived).",
            labels=["door", "reason"],
        )
        for door, stats in sorted(doors.items()):
            conns.add_metric([door], stats.established)
            handshaking.add_metric([door], stats.handshaking)
            refused.add_metric([door], stats.refused)
            for reason in sorted({"timeout", "evicted", *stats.dropped}):
                dropped.add_metric([door, reason], stats.dropped.get(reason, 0))
        yield conns
        yield handshaking
        yield refused
        yield dropped

    def _histograms(self) -> Iterable[Metric]:
        ins = self.instruments
        yield _histogram(
            "tq_submit_latency_seconds",
            "TCP submit requests: from the read carrying the request until it was durable.",
            ins.submit_latency,
        )
        yield _histogram(
            "tq_claim_latency_seconds",
            "TCP claim requests: from the read carrying the request until answered (or "
            "parked for a long poll).",
            ins.claim_latency,
        )
        processing = HistogramMetricFamily(
            "tq_task_processing_duration_seconds",
            "From claim to reported outcome, per attempt.",
            labels=["outcome"],
        )
        for outcome, hist in ins.processing.items():
            processing.add_metric([outcome], hist.cumulative(), hist.sum)
        yield processing
        yield _histogram(
            "tq_group_commit_batch_size",
            "Storage mutations made durable by one WAL fsync.",
            ins.commit_batch,
        )
        yield _histogram(
            "tq_group_commit_fsync_duration_seconds",
            "Duration of one WAL fsync.",
            ins.fsync_latency,
        )

    def _cluster(self) -> Iterable[Metric]:
        """Only on a cluster node (``raft.enabled``): its role, place in the log, lag, and
        the leader's appends."""
        s = self.service
        if s.cluster_view is None:
            return
        status = s.cluster_view()
        yield GaugeMetricFamily(
            "tq_cluster_leader", "1 while this node leads the cluster, else 0.",
            status.role == "leader",
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tq_cluster_epoch", "The current leader's epoch (0 while none is known).",
            status.epoch or 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "tq_cluster_leader_changes",
            "Times this node became the leader since it started.",
            status.leader_changes,
        )
        yield GaugeMetricFamily(
            "tq_cluster_applied_index", "The last log entry this node applied.",
            status.applied_index,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tq_cluster_log_last_index", "The newest log entry in etcd, as last read.",
            status.log_last_index,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tq_cluster_apply_lag_entries",
            "Log entries this node has still to apply (the log's last index minus its own).",
            max(0, status.log_last_index - status.applied_index),
        )
        ins = self.instruments
        yield _histogram(
            "tq_cluster_append_duration_seconds",
            "A leader's log append: from sending the entry to etcd's commit.",
            ins.append_latency,
        )
        yield _histogram(
            "tq_cluster_append_commands",
            "Commands per log entry a leader appended.",
            ins.append_commands,
        )

    def _storage(self) -> Iterable[Metric]:
        gc = self.service.commit
        yield CounterMetricFamily(
            "tq_group_commit_writes", "Write batches (one per event-loop turn with changes).",
            gc.writes,
        )  # fmt: skip
        yield CounterMetricFamily("tq_group_commit_fsyncs", "WAL fsyncs completed.", gc.syncs)
        yield CounterMetricFamily(
            "tq_group_commit_mutations", "Storage mutations written.", gc.mutations
        )
        s = self.service
        yield CounterMetricFamily(
            "tq_storage_failures",
            "Storage outages: a write or fsync failed (or the broker started on a full disk), "
            "and writes were refused until storage worked again.",
            s.storage_failures,
        )
        yield GaugeMetricFamily(
            "tq_storage_writes_accepted",
            "1 while storage accepts writes; 0 during an outage (reads are still served).",
            s.failed is None,
        )


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.sum)


def build_registry(service: BrokerService, instruments: Instruments) -> CollectorRegistry:
    """A private registry: the tq collector plus process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(service, instruments))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# ---------------------------------------------------------------------------------- HTTP

#: A scrape request's head is a few hundred bytes; anything near this is not Prometheus.
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 64
TLS_HANDSHAKE_TIMEOUT = 10.0  # a scraper's TLS handshake, when TLS is on
IDLE_TIMEOUT = 60.0  # Prometheus keeps connections alive between scrapes (15 s by default)
WRITE_TIMEOUT = 10.0
INDEX = b"tq broker metrics: GET /metrics\n"


class Request(NamedTuple):
    method: str
    path: str
    keep_alive: bool
    has_body: bool
    accept: str
    #: The headers that may carry an API key (``tq.api.credentials``), by lower-case name.
    credentials: Mapping[str, str] = {}


def parse_head(head: bytes) -> Request | None:
    """The request line and headers we care about; None when malformed."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
    credentials = {k: v for k, v in headers.items() if k in (AUTHORIZATION, API_KEY_HEADER)}
    path = target.split("?", 1)[0]
    return Request(method, path, keep_alive, has_body, headers.get("accept", ""), credentials)


def response(
    status: HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    keep_alive: bool = False,
    head_only: bool = False,
    extra: str = "",
) -> bytes:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


class MetricsServer:
    """The ``metrics`` front door (started by ``tq.broker.server``)."""

    name = "metrics"

    def __init__(
        self, service: BrokerService, settings: Settings, *, tls: ServerTls | None = None
    ) -> None:
        mon = settings.monitoring
        self.service = service
        #: With TLS on, scrapes are https (and need a client certificate under mutual TLS).
        self.tls = tls
        self.host = mon.prometheus_host
        self.port = mon.prometheus_port
        self.instruments = Instruments()
        self.registry = build_registry(service, self.instruments)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        try:
            self._server = await asyncio.start_server(
                self._connection, self.host, self.port, limit=MAX_HEAD,
                ssl=None if self.tls is None else self.tls.context,
                ssl_handshake_timeout=None if self.tls is None else TLS_HANDSHAKE_TIMEOUT,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: "
                f"{os.strerror(exc.errno).lower() if exc.errno else exc} "
                "(set monitoring.prometheus_port; 0 picks a free port)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self.service.instrument(self.instruments)
        return self.port

    async def stop(self) -> None:
        if self.service.instruments is self.instruments:
            self.service.instrument(None)
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics when asked for) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def refusal(self, req: Request) -> bytes | None:
        """The answer refusing a scrape (auth.protect_metrics: the service judges the key in
        ``Authorization: Bearer``), or None to serve it."""
        try:
            await self.service.may_scrape(presented_key(req.credentials.get))
        except TqError as e:
            status = HTTPStatus(e.code.http_status)
            extra = "WWW-Authenticate: Bearer\r\n" if status == HTTPStatus.UNAUTHORIZED else ""
            if isinstance(e, RateLimitedError) and e.retry_after is not None:
                extra = f"Retry-After: {max(1, math.ceil(e.retry_after))}\r\n"
            body = f"[{e.code.name}] {e.message}\n".encode()
            return response(status, body, extra=extra)
        return None

    def answer(self, req: Request) -> tuple[bytes, bool]:
        """The response to one request, and whether the connection stays open."""
        keep = req.keep_alive and not req.has_body
        head_only = req.method == "HEAD"
        if req.method not in ("GET", "HEAD"):
            body = f"method {req.method} not allowed: use GET\n".encode()
            extra = "Allow: GET, HEAD\r\n"
            return response(HTTPStatus.METHOD_NOT_ALLOWED, body, extra=extra), False
        if req.path == "/metrics":
            try:
                body, content_type = self.render(req.accept)
            except Exception as exc:  # a broken collector must cost the scrape, not the broker
                log.exception("metrics.scrape_failed error=%s", exc)
                body = f"collecting metrics failed: {type(exc).__name__}: {exc}\n".encode()
                return response(HTTPStatus.INTERNAL_SERVER_ERROR, body), False
            return response(HTTPStatus.OK, body, content_type, keep_alive=keep,
                            head_only=head_only), keep  # fmt: skip
        if req.path == "/":
            return response(HTTPStatus.OK, INDEX, keep_alive=keep, head_only=head_only), keep
        body = f"no such path: {req.path} (metrics are at /metrics)\n".encode()
        return response(HTTPStatus.NOT_FOUND, body, keep_alive=keep, head_only=head_only), keep

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the scraper went away or went quiet: nothing to tell anyone
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                status, body = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request too large\n"
                writer.write(response(status, body))
                return
            req = parse_head(head)
            if req is None:
                writer.write(response(HTTPStatus.BAD_REQUEST, b"malformed HTTP request\n"))
                return
            refused = await self.refusal(req) if req.path == "/metrics" else None
            out, keep = (refused, False) if refused is not None else self.answer(req)
            writer.write(out)
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
            if not keep:
                return
