"""The typed, frozen settings tree: one model per section, every field with its SPEC default.

Rules: durations are float seconds named ``*_s`` (one exception, ``relaxed_sync_interval_ms``,
because that knob is tuned in milliseconds), sizes are ints named ``*_bytes``. Single-field rules
live in the types of ``fields``; rules tying fields together raise ``conflict()`` so the loader
names both keys. ``config.example.yml`` must list every field (a test walks them). Fields
listed in ``unbuilt`` describe features not built yet: ``load()`` refuses them unless at their
default, and that default is always the "off" value.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Literal, Self, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tq.config.fields import (
    Bytes,
    Count,
    FilePath,
    FixedPort,
    Host,
    HostPort,
    LogFormat,
    LogFormatField,
    LogLevel,
    LogLevelField,
    MiB,
    Name,
    NonEmpty,
    Pool,
    PoolField,
    Port,
    Seconds,
    SyncMode,
    SyncModeField,
    conflict,
    origin_url,
    unique,
    url,
    url_list,
)


class _Section(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        allow_inf_nan=False,  # an infinite lease or a NaN interval is never what was meant
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: object, info: ValidationInfo) -> object:
        # pydantic reads True as 1, so YAML's `port: yes` would quietly mean port 1.
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            kinds = get_args(annotation) if get_origin(annotation) in _UNIONS else (annotation,)
            # Members of a union keep their Annotated[...] wrapper; the type is its first arg.
            kinds = tuple(get_args(k)[0] if get_origin(k) is Annotated else k for k in kinds)
            if bool not in kinds and any(kind in (int, float) for kind in kinds):
                raise ValueError("input should be a number, not a boolean")
        return value


_UNIONS = (Union, types.UnionType)


# -- sections ---------------------------------------------------------------------------------

#: Room a frame keeps beside a task's payload and tags for its other fields: a CLAIM_REPLY
#: holding one task needs at most 2.3 KiB more (``tq.core.sizes.claimed_size``).
RECORD_ROOM_BYTES = 4 * 1024


class BrokerSettings(_Section):
    host: Host = "127.0.0.1"
    """Address the TCP protocol listens on; 0.0.0.0 for every interface."""
    port: Port = 7420
    """TCP port of the binary protocol."""
    node_id: Name = "node-1"
    """This broker's name in logs, metrics and (unless raft.node_id is set) the cluster."""
    max_connections: Count = 1000
    """Established connections (HELLO done); a HELLO beyond them gets TOO_MANY_CONNECTIONS."""
    max_handshaking: Count = 1000
    """Connections accepted but still before their HELLO, counted apart from max_connections;
    a newcomer beyond them closes the oldest (each costs one file descriptor and at most a
    64 KiB partial HELLO)."""
    handshake_timeout_s: Seconds = 5.0
    """A connection whose HELLO frame is not complete this long after accept gets NACK TIMEOUT
    and is closed."""
    idle_timeout_s: Seconds = 30.0
    """A connection that sent no complete frame for this long is closed with NACK TIMEOUT
    (clients keep alive with PING, workers with heartbeats; partial frames do not count)."""
    max_frame_size_bytes: Bytes = 16 * MiB
    """Largest protocol frame; a bigger one is NACKed and the connection closed."""
    max_payload_size_bytes: Bytes = 10 * MiB
    """Largest task payload, its tags included; must be at least 4 KiB below
    max_frame_size_bytes so a task with its other fields fits in a frame."""
    output_high_water_bytes: Annotated[int, Field(ge=64 * 1024)] = 4 * MiB
    """A connection's pending output (replies not yet taken by the peer, queued, or waiting
    for durability) above which the broker stops reading and serving its requests until it
    falls below a quarter of this; pushed events beyond this plus twice max_frame_size_bytes
    close the connection as a slow consumer."""
    backpressure_threshold: Count = 100_000
    """Pending tasks above which submits are refused with QUEUE_FULL."""
    lease_duration_s: Seconds = 30.0
    """How long a claimed task is leased to its worker; heartbeats extend it."""
    lease_check_interval_s: Seconds = 10.0
    """How often the lease monitor returns expired tasks to their queue."""
    heartbeat_interval_s: Seconds = 15.0
    """Heartbeat interval the broker announces to workers and expects from them."""
    dead_worker_missed_heartbeats: Count = 2
    """Missed heartbeat intervals after which a worker is dead and its tasks reclaimed."""
    maintenance_interval_s: Seconds = 5.0
    """How often dead workers are detected and gauges refreshed."""
    default_claim_batch: Count = 10
    """Tasks handed out per claim when the worker does not ask for a number."""
    # The wire protocol caps CLAIM_TASK's max_tasks at 1000: a higher bound would never apply.
    max_claim_batch: Annotated[int, Field(ge=1, le=1000)] = 1000
    """Upper bound on tasks handed out by one claim (at most 1000, the protocol's own cap)."""
    max_long_poll_s: Annotated[float, Field(ge=0)] = 30.0
    """Longest a claim may wait for work (long poll); 0 disables waiting."""
    # Parked claims also hold at most 1000 queue names between them (``tq.broker.quotas``).
    max_parked_claims: Annotated[int, Field(ge=1, le=1000)] = 100
    """Long-poll claims one connection may have parked at once (1-1000; together they name
    at most 1000 queues); a claim beyond them that finds nothing is answered at once with
    no tasks, as without a wait."""
    max_subscriptions: Count = 10_000
    """Live subscriptions per subscriber (a TCP connection, a WebSocket, a gRPC watch
    stream); a client waiting for a result holds one. A subscribe beyond is refused."""
    max_watched_task_ids: Count = 10_000
    """Task ids one subscriber follows across its subscriptions; a subscribe beyond is
    refused."""
    max_watched_queues: Count = 1000
    """Queues one subscriber follows across its subscriptions, a subscription to every task
    counting as one; a subscribe beyond is refused."""
    default_max_retries: Annotated[int, Field(ge=0)] = 3
    """Retries of a task that does not set max_retries, before it is dead-lettered."""
    retry_backoff_base_s: Seconds = 1.0
    """Delay before the first retry."""
    retry_backoff_factor: Annotated[float, Field(ge=1)] = 2.0
    """Each further retry waits this many times longer."""
    retry_backoff_max_s: Seconds = 300.0
    """Cap on the retry delay."""
    retry_jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Random +/- fraction applied to each retry delay so retries do not stampede."""
    scheduler_interval_s: Seconds = 0.5
    """How often delayed (ETA) and cron tasks are checked for being due."""
    priority_aging_interval_s: Seconds = 60.0
    """Every this long a pending task waits, its effective priority gains priority_aging_step
    (escalation, so low tiers never starve; docs/priority-aging.md)."""
    priority_aging_step: Annotated[int, Field(ge=0, le=255)] = 0
    """Priority gained per aging interval, up to priority_aging_max; 0 turns aging off."""
    priority_aging_max: Annotated[int, Field(ge=0, le=255)] = 255
    """Aging raises a task's priority up to this, never beyond (a task submitted above it
    keeps its own priority)."""
    priority_aging_exempt_queues: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(unique)
    ] = ()
    """Queues whose tasks never age: they are served by their submitted priority alone."""
    idempotency_window_s: Seconds = 86_400.0
    """How long an idempotency key maps a duplicate submit to the existing task."""
    shutdown_timeout_s: Seconds = 30.0
    """On SIGTERM/SIGINT: time to drain connections and flush storage before exiting."""
    default_result_ttl_s: Seconds | None = None
    """Seconds a completed task and its result are kept when the task sets no result_ttl;
    None: until persistence.retention_s, as every completed task."""
    default_failure_ttl_s: Seconds | None = None
    """Seconds a dead-lettered task is kept when the task sets no failure_ttl; None: until
    it is retried or deleted."""
    schedule_misfire_grace_s: Seconds = 10.0
    """A cron or interval firing later than this (the broker was down or overloaded) is a
    missed firing, handled by its schedule's missed policy (skip, once, all)."""
    schedule_catch_up_max: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Missed policy ``all``: at most this many missed firings of one schedule are fired after
    downtime (the latest ones); older missed firings are skipped."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.lease_check_interval_s >= self.lease_duration_s:
            raise conflict(
                "broker.lease_check_interval_s",
                self.lease_check_interval_s,
                "must be less than broker.lease_duration_s, or leases outlive their term",
                "broker.lease_duration_s",
                self.lease_duration_s,
            )
        if self.heartbeat_interval_s >= self.lease_duration_s:
            raise conflict(
                "broker.heartbeat_interval_s",
                self.heartbeat_interval_s,
                "must be less than broker.lease_duration_s, or leases expire between heartbeats",
                "broker.lease_duration_s",
                self.lease_duration_s,
            )
        if self.max_payload_size_bytes + RECORD_ROOM_BYTES > self.max_frame_size_bytes:
            raise conflict(
                "broker.max_payload_size_bytes",
                self.max_payload_size_bytes,
                "must be at least 4 KiB below broker.max_frame_size_bytes, or a task with a "
                "full payload and its other fields cannot be sent",
                "broker.max_frame_size_bytes",
                self.max_frame_size_bytes,
            )
        if self.retry_backoff_max_s < self.retry_backoff_base_s:
            raise conflict(
                "broker.retry_backoff_max_s",
                self.retry_backoff_max_s,
                "must be at least broker.retry_backoff_base_s",
                "broker.retry_backoff_base_s",
                self.retry_backoff_base_s,
            )
        if self.default_claim_batch > self.max_claim_batch:
            raise conflict(
                "broker.default_claim_batch",
                self.default_claim_batch,
                "must be at most broker.max_claim_batch",
                "broker.max_claim_batch",
                self.max_claim_batch,
            )
        return self


class PersistenceSettings(_Section):
    data_dir: FilePath = Path(".tq-data")
    """RocksDB directory; relative paths are relative to the working directory."""
    sync_mode: SyncModeField = SyncMode.FSYNC
    """fsync: a task is acknowledged only once on disk. relaxed: synced every
    relaxed_sync_interval_ms, so a power loss can lose the last interval of writes."""
    relaxed_sync_interval_ms: Annotated[int, Field(ge=1, le=60_000)] = 100
    """Sync period in relaxed mode (milliseconds); ignored in fsync mode."""
    retention_s: Seconds = 7 * 86_400.0
    """How long completed tasks are kept before the compaction job deletes them."""
    compaction_interval_s: Seconds = 3600.0
    """How often expired tasks are deleted and RocksDB compacted."""
    write_buffer_size_bytes: Annotated[int, Field(ge=MiB)] = 64 * MiB
    """RocksDB memtable size per column family."""
    max_background_jobs: Count = 4
    """RocksDB threads for flushes and compactions."""
    block_cache_size_bytes: Annotated[int, Field(ge=0)] = 128 * MiB
    """RocksDB block cache shared by all column families; 0 disables it."""


class RaftMember(_Section):
    """One broker of the cluster. In YAML or env also written ``"node_id=host:port"``."""

    node_id: Name
    """The member's broker.node_id (or raft.node_id)."""
    address: HostPort
    """host:port where its broker accepts clients; managed etcd binds on the same host."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, str):
            node_id, sep, address = data.partition("=")
            if not sep:
                raise ValueError("must be 'node_id=host:port' or a mapping with both keys")
            return {"node_id": node_id.strip(), "address": address.strip()}
        return data


class RaftSettings(_Section):
    """Clustering through etcd (``tq.broker.node``). The keys still listed in
    ``tq.config.unbuilt`` are refused unless at their default."""

    enabled: bool = False
    """Replicate through etcd (3 or 5 nodes). Off: single node, the local RocksDB WAL is the log."""
    etcd_endpoints: tuple[Annotated[str, url(("http", "https"))], ...] = ()
    """etcd client URLs (http://host:2379); may stay empty when manage_local_etcd is on."""
    cluster_name: Name = "tq"
    """Prefix of every etcd key, so several clusters can share one etcd."""
    node_id: Name | None = None
    """This node's id in the cluster; null uses broker.node_id."""
    advertise_address: HostPort | None = None
    """host:port other nodes and clients use to reach this broker; null: broker.host:port."""
    members: tuple[RaftMember, ...] = ()
    """Every broker of the cluster, this one included."""
    leader_lease_ttl_s: Annotated[int, Field(ge=2, le=60)] = 5
    """etcd lease TTL of the leader key (whole seconds, as etcd grants them): the failover time."""
    log_trim_interval_s: Seconds = 60.0
    """How often log entries applied by every node are trimmed and etcd compacted."""
    snapshot_threshold: Count = 10_000
    """Log entries a follower may lag before it installs a RocksDB checkpoint instead."""
    etcd_timeout_s: Seconds = 5.0
    """Timeout of each etcd request."""
    manage_local_etcd: bool = False
    """Start and supervise a local etcd member, so a node is one command."""
    etcd_data_dir: FilePath | None = None
    """Data directory of the managed etcd; null: <persistence.data_dir>/etcd."""
    etcd_binary: NonEmpty = "etcd"
    """Executable of the managed etcd (looked up on PATH)."""
    etcd_client_port: FixedPort = 2379
    """Client port of the managed etcd."""
    etcd_peer_port: FixedPort = 2380
    """Peer port of the managed etcd."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        ids = [member.node_id for member in self.members]
        twice = next((node_id for node_id in ids if ids.count(node_id) > 1), None)
        if twice is not None:
            raise conflict("raft.members", ids, f"names node {twice!r} twice", "raft.members", ids)
        if self.enabled and not self.etcd_endpoints and not self.manage_local_etcd:
            raise conflict(
                "raft.etcd_endpoints",
                [],
                "must name at least one etcd endpoint when raft is enabled",
                "raft.manage_local_etcd",
                False,
            )
        if self.enabled and self.manage_local_etcd and not self.members:
            raise conflict(
                "raft.members",
                [],
                "must list every node, this one included, when raft.manage_local_etcd is on "
                "(each node runs an etcd member at the host of its address)",
                "raft.manage_local_etcd",
                True,
            )
        if self.manage_local_etcd and self.etcd_client_port == self.etcd_peer_port:
            raise conflict(
                "raft.etcd_peer_port",
                self.etcd_peer_port,
                "must differ from raft.etcd_client_port",
                "raft.etcd_client_port",
                self.etcd_client_port,
            )
        return self


class ApiSettings(_Section):
    rest_enabled: bool = True
    """Serve the REST API (OpenAPI at /docs)."""
    rest_host: Host = "127.0.0.1"
    """Address of the HTTP server (REST, WebSocket, dashboard)."""
    rest_port: Port = 8080
    """Port of the HTTP server."""
    websocket_enabled: bool = True
    """Serve live task events and stats over WebSocket on the HTTP server."""
    dashboard_enabled: bool = False
    """Serve the web dashboard on the HTTP server. Not built yet (``unbuilt``)."""
    grpc_enabled: bool = True
    """Serve the gRPC API."""
    grpc_host: Host = "127.0.0.1"
    """Address of the gRPC server."""
    grpc_port: Port = 50051
    """Port of the gRPC server."""
    max_request_body_bytes: Bytes = 16 * MiB
    """Largest HTTP/gRPC request: a 10 MiB payload base64-encoded in JSON is about 13.4 MiB."""
    cors_origins: Annotated[
        tuple[Annotated[str, AfterValidator(origin_url)], ...], AfterValidator(unique)
    ] = ()
    """Browser origins allowed to call the HTTP API ("*" for any); empty: same origin only."""

    @property
    def http_enabled(self) -> bool:
        """Whether the HTTP server runs at all (it carries REST and WebSocket; the dashboard,
        once built, too)."""
        return self.rest_enabled or self.websocket_enabled


PermissionClass = Literal["submit", "read", "work", "admin"]


class RateLimitSetting(_Section):
    rate: Annotated[float, Field(gt=0)]
    """Tokens per second refilling the bucket."""
    burst: Annotated[int, Field(ge=1)]
    """Tokens the bucket holds: calls allowed at once after a quiet spell."""


class AuthSettings(_Section):
    """TLS, exposure, API keys and rate limits (docs/security.md)."""

    enabled: bool = False
    """Require an API key on every interface and check its permissions."""
    bootstrap_key_file: FilePath | None = None
    """File holding the secret of the admin key named ``bootstrap`` that a broker with auth
    enabled creates when its data dir holds no key yet (else TQ_BOOTSTRAP_API_KEY, else a new
    one written to <data_dir>/bootstrap-admin.key)."""
    rate_limits: dict[PermissionClass, RateLimitSetting | None] = {}
    """Token bucket per API key and permission class (submit, read, work, admin), as
    {rate: per second, burst: tokens}; a class not given (or null) is unlimited. A key may
    carry its own limits, set when it is created."""
    protect_metrics: bool = False
    """With auth enabled, require a key with the read permission on /metrics too
    (Authorization: Bearer <key>); false: metrics stay open to whoever reaches their port."""
    tls_cert_file: FilePath | None = None
    """PEM certificate: turns on TLS for TCP, HTTP and gRPC. Needs tls_key_file."""
    tls_key_file: FilePath | None = None
    """PEM private key of tls_cert_file."""
    tls_ca_file: FilePath | None = None
    """PEM CA bundle that client certificates are verified against."""
    require_client_cert: bool = False
    """Refuse clients without a certificate signed by tls_ca_file (mutual TLS)."""
    insecure: bool = False
    """Let a broker listen on a non-loopback address (TCP, REST or gRPC) with neither API keys
    nor client certificates required; it then logs a warning. Without it, it refuses to start."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            present, missing = (
                ("auth.tls_cert_file", "auth.tls_key_file")
                if self.tls_key_file is None
                else ("auth.tls_key_file", "auth.tls_cert_file")
            )
            value = self.tls_cert_file or self.tls_key_file
            raise conflict(present, value, f"needs {missing} as well", missing, None)
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise conflict(
                "auth.tls_ca_file",
                self.tls_ca_file,
                "needs auth.tls_cert_file: client certificates are only checked over TLS",
                "auth.tls_cert_file",
                None,
            )
        if self.require_client_cert and self.tls_ca_file is None:
            raise conflict(
                "auth.require_client_cert",
                True,
                "needs auth.tls_ca_file to verify client certificates against",
                "auth.tls_ca_file",
                None,
            )
        return self

    @property
    def tls_enabled(self) -> bool:
        """TLS is on for every interface exactly when a certificate is configured."""
        return self.tls_cert_file is not None


class MonitoringSettings(_Section):
    prometheus_enabled: bool = True
    """Serve Prometheus metrics at /metrics on their own port."""
    prometheus_host: Host = "127.0.0.1"
    """Address of the metrics server; 0.0.0.0 to be scraped from other hosts."""
    prometheus_port: Port = 9420
    """Port of the metrics server (not 9090: that is the Prometheus server's own default)."""
    log_level: LogLevelField = LogLevel.INFO
    """DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."""
    log_format: LogFormatField = LogFormat.TEXT
    """text for humans, json for log collectors."""


class WorkerSettings(_Section):
    broker_url: Annotated[str, url_list(("tq", "tqs"))] = "tq://127.0.0.1:7420"
    """Broker to connect to: tq://host:port, or tqs://host:port over TLS; the nodes of a
    cluster as a comma-separated list (tq://a:7420,tq://b:7420): the worker and the CLI follow
    the leader among them."""
    queues: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...],
        Field(min_length=1),
        AfterValidator(unique),
    ] = ("default",)
    """Queues to claim from."""
    concurrency: Count = 4
    """Tasks run at once."""
    pool: PoolField = Pool.ASYNCIO
    """asyncio (async handlers; sync ones in threads), thread, or process (CPU-bound work,
    hard timeouts)."""
    prefetch: Count = 10
    """Tasks claimed ahead of need, waiting beyond the ``concurrency`` running ones (a worker
    holds at most concurrency + prefetch); they are leased while they wait: keep it small."""
    heartbeat_interval_s: Seconds = 15.0
    """Longest gap between heartbeats; shorter if the broker announces a shorter interval (a
    worker never beats slower than its broker expects)."""
    shutdown_timeout_s: Seconds = 60.0
    """On shutdown: time to finish in-flight tasks before the rest are handed back."""
    default_timeout_s: Seconds | None = None
    """Execution timeout of a task that sets none; null: no timeout."""
    handlers_module: NonEmpty | None = None
    """Python module whose import registers the handlers (like celery -A)."""
    name: Name | None = None
    """Worker id shown by the broker; null: <hostname>-<pid>."""
    api_key: SecretStr | None = None
    """API key the worker and the CLI present to a broker with auth enabled
    (tq_<id>_<secret>); $TQ_API_KEY and --api-key come first. Shown masked by tq config."""
    tls_ca_file: FilePath | None = None
    """PEM CA bundle a tqs:// broker's certificate is verified against; null: the system's CAs.
    Read by workers and the CLI."""
    tls_cert_file: FilePath | None = None
    """PEM client certificate presented to a tqs:// broker (mutual TLS). Needs tls_key_file."""
    tls_key_file: FilePath | None = None
    """PEM private key of tls_cert_file."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            present, missing = (
                ("worker.tls_cert_file", "worker.tls_key_file")
                if self.tls_key_file is None
                else ("worker.tls_key_file", "worker.tls_cert_file")
            )
            value = self.tls_cert_file or self.tls_key_file
            raise conflict(present, value, f"needs {missing} as well", missing, None)
        return self


# -- the whole tree ---------------------------------------------------------------------------

# Addresses meaning "every interface": compared against, never bound here.
_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]"})  # noqa: S104


class Settings(_Section):
    """The effective configuration. Build it with ``tq.config.load``; ``Settings()`` is defaults."""

    broker: BrokerSettings = BrokerSettings()
    persistence: PersistenceSettings = PersistenceSettings()
    raft: RaftSettings = RaftSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    worker: WorkerSettings = WorkerSettings()

    @property
    def node_id(self) -> str:
        """This node's cluster id: raft.node_id, else broker.node_id."""
        return self.raft.node_id or self.broker.node_id

    @property
    def advertise_address(self) -> str:
        """Where peers and clients reach this broker: raft.advertise_address, else host:port."""
        return self.raft.advertise_address or f"{self.broker.host}:{self.broker.port}"

    @property
    def etcd_data_dir(self) -> Path:
        """Data directory of the managed etcd: raft.etcd_data_dir, else <data_dir>/etcd."""
        return self.raft.etcd_data_dir or self.persistence.data_dir / "etcd"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        raft = self.raft
        if raft.enabled and raft.members and self.node_id not in {m.node_id for m in raft.members}:
            key = "raft.node_id" if raft.node_id else "broker.node_id"
            raise conflict(
                key,
                self.node_id,
                "must be one of raft.members",
                "raft.members",
                [m.node_id for m in raft.members],
            )
        if raft.enabled and raft.advertise_address is None and self.broker.host in _WILDCARDS:
            raise conflict(
                "raft.advertise_address",
                None,
                "must be set when broker.host listens on every interface: peers cannot dial it",
                "broker.host",
                self.broker.host,
            )
        self._check_ports()
        return self

    def _check_ports(self) -> None:
        listeners = [
            ("broker.port", self.broker.host, self.broker.port, True),
            ("api.rest_port", self.api.rest_host, self.api.rest_port, self.api.http_enabled),
            ("api.grpc_port", self.api.grpc_host, self.api.grpc_port, self.api.grpc_enabled),
            (
                "monitoring.prometheus_port",
                self.monitoring.prometheus_host,
                self.monitoring.prometheus_port,
                self.monitoring.prometheus_enabled,
            ),
            ("raft.etcd_client_port", "", self.raft.etcd_client_port, self.raft.manage_local_etcd),
            ("raft.etcd_peer_port", "", self.raft.etcd_peer_port, self.raft.manage_local_etcd),
        ]
        active = [entry for entry in listeners if entry[3] and entry[2] != 0]
        for i, (key, host, port, _) in enumerate(active):
            for other_key, other_host, other_port, _ in active[:i]:
                # Managed etcd ("" host) binds every interface of this machine.
                overlap = host == other_host or {host, other_host} & (_WILDCARDS | {""})
                if port == other_port and overlap:
                    raise conflict(key, port, f"clashes with {other_key}", other_key, other_port)


#: Section name -> its model, in file order.
SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation
    for name, info in Settings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, _Section)
}
