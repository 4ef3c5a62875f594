"""Defaults equal the SPEC's numbers, and config.example.yml documents exactly the model."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import msgspec.inspect as mi
import pydantic
import pytest
import yaml

import tq.config
from tq.config import (
    BrokerSettings,
    LogFormat,
    LogLevel,
    Pool,
    Settings,
    SyncMode,
    dump,
    load,
    setting_keys,
)
from tq.config.model import SECTIONS
from tq.protocol.messages import ClaimTask

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"
MiB = 1024 * 1024


def test_broker_defaults_are_the_spec_numbers() -> None:
    broker = Settings().broker
    assert (broker.host, broker.port, broker.node_id) == ("127.0.0.1", 7420, "node-1")
    assert broker.max_connections == 1000
    assert broker.max_handshaking == 1000
    assert broker.handshake_timeout_s == 5.0
    assert broker.idle_timeout_s == 30.0
    assert broker.max_frame_size_bytes == 16 * MiB
    assert broker.max_payload_size_bytes == 10 * MiB
    assert broker.backpressure_threshold == 100_000
    assert broker.lease_duration_s == 30.0
    assert broker.lease_check_interval_s == 10.0
    assert broker.heartbeat_interval_s == 15.0
    assert broker.dead_worker_missed_heartbeats == 2
    assert broker.default_claim_batch == 10
    assert broker.max_long_poll_s == 30.0
    assert broker.default_max_retries == 3
    assert (broker.retry_backoff_base_s, broker.retry_backoff_factor) == (1.0, 2.0)
    assert broker.retry_backoff_max_s == 300.0
    assert broker.retry_jitter == 0.1
    assert broker.scheduler_interval_s == 0.5
    assert broker.priority_aging_step == 0  # aging is off unless configured
    assert broker.idempotency_window_s == 24 * 3600.0


def test_the_claim_batch_bound_is_the_protocols_own_cap() -> None:
    # A max_claim_batch above what CLAIM_TASK may ask for would never apply.
    info = mi.type_info(ClaimTask)
    assert isinstance(info, mi.StructType)
    (max_tasks,) = (f for f in info.fields if f.name == "max_tasks")
    assert isinstance(max_tasks.type, mi.UnionType)  # int or nil (the broker's default)
    (wire,) = (t for t in max_tasks.type.types if isinstance(t, mi.IntType))
    metadata = BrokerSettings.model_fields["max_claim_batch"].metadata
    assert [wire.le] == [m.le for m in metadata if getattr(m, "le", None) is not None]


def test_persistence_defaults_are_the_spec_numbers() -> None:
    persistence = Settings().persistence
    assert persistence.data_dir == Path("./.tq-data")
    assert persistence.sync_mode is SyncMode.FSYNC
    assert persistence.relaxed_sync_interval_ms == 100
    assert persistence.retention_s == 7 * 86_400.0
    assert persistence.compaction_interval_s == 3600.0


def test_cluster_api_auth_monitoring_and_worker_defaults_are_the_spec_numbers() -> None:
    settings = Settings()
    assert settings.raft.enabled is False
    assert settings.raft.etcd_endpoints == ()
    assert settings.raft.members == ()
    assert settings.raft.manage_local_etcd is False
    api = settings.api
    assert (api.rest_enabled, api.rest_port) == (True, 8080)
    assert (api.websocket_enabled, api.dashboard_enabled) == (True, False)  # no dashboard yet
    assert (api.grpc_enabled, api.grpc_port) == (True, 50051)
    assert settings.auth.enabled is False
    assert settings.auth.require_client_cert is False
    assert settings.auth.tls_enabled is False
    monitoring = settings.monitoring
    assert (monitoring.prometheus_enabled, monitoring.prometheus_port) == (True, 9420)
    assert (monitoring.log_level, monitoring.log_format) == (LogLevel.INFO, LogFormat.TEXT)
    worker = settings.worker
    assert worker.broker_url == "tq://127.0.0.1:7420"
    assert worker.queues == ("default",)
    assert (worker.concurrency, worker.pool) == (4, Pool.ASYNCIO)
    assert worker.prefetch == settings.broker.default_claim_batch
    assert worker.heartbeat_interval_s == 15.0
    assert worker.shutdown_timeout_s == 60.0
    assert worker.default_timeout_s is None


def test_derived_values_fall_back_to_the_broker_and_data_dir() -> None:
    settings = Settings()
    assert settings.node_id == "node-1"
    assert settings.advertise_address == "127.0.0.1:7420"
    assert settings.etcd_data_dir == Path(".tq-data/etcd")


def test_load_with_nothing_set_gives_the_defaults() -> None:
    assert load(env={}) == Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(pydantic.ValidationError):
        settings.broker.port = 1


def test_dump_is_plain_json_and_yaml_data() -> None:
    data = dump(Settings())
    assert json.loads(json.dumps(data)) == data
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert data["persistence"]["data_dir"] == ".tq-data"
    assert data["worker"]["queues"] == ["default"]


def test_setting_keys_walk_every_field_of_every_section() -> None:
    keys = setting_keys()
    assert "broker.port" in keys
    assert len(keys) == len(set(keys)) == sum(len(m.model_fields) for m in SECTIONS.values())
    assert list(SECTIONS) == [
        "broker",
        "persistence",
        "raft",
        "api",
        "auth",
        "monitoring",
        "worker",
    ]


def test_every_setting_has_a_description_in_the_code() -> None:
    undocumented = [
        f"{section}.{key}"
        for section, model in SECTIONS.items()
        for key, info in model.model_fields.items()
        if not info.description
    ]
    assert undocumented == []


def test_the_example_file_loads_to_exactly_the_defaults() -> None:
    assert load(EXAMPLE, env={}) == Settings()


def test_the_example_file_lists_every_key_of_the_model_and_no_other() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    listed = [f"{section}.{key}" for section, body in data.items() for key in body]
    assert listed == setting_keys()  # same keys, same order as the model


def test_the_example_file_comments_every_key() -> None:
    lines = EXAMPLE.read_text().splitlines()
    setting = re.compile(r"^  (\w+):")
    uncommented = [
        match.group(1)
        for previous, line in itertools.pairwise(lines)
        if (match := setting.match(line)) and not previous.strip().startswith("#")
    ]
    assert uncommented == []


def test_everything_in_all_is_importable_from_tq_config() -> None:
    missing = [name for name in tq.config.__all__ if not hasattr(tq.config, name)]
    assert missing == []


def test_config_durations_stop_at_the_wires_bound_on_seconds() -> None:
    from tq.config.fields import MAX_SECONDS as CONFIG_MAX
    from tq.protocol.records import MAX_SECONDS as WIRE_MAX

    assert CONFIG_MAX == WIRE_MAX
