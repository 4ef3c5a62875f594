"""load(): defaults < YAML file < TQ_* environment < overrides, and how text values are parsed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tq.config import (
    CONFIG_ENV,
    LogLevel,
    Pool,
    RaftMember,
    RaftSettings,
    Settings,
    SyncMode,
    load,
)
from tq.config.sources import parse_text
from tq.errors import ConfigError

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(text: str) -> Path:
        path = tmp_path / "tq.yml"
        path.write_text(text)
        return path

    return write


def test_the_file_overrides_defaults_and_leaves_the_rest_alone(write_config: WriteConfig) -> None:
    path = write_config("broker:\n  port: 7500\nworker:\n  concurrency: 8\n")
    settings = load(path, env={})
    assert settings.broker.port == 7500
    assert settings.worker.concurrency == 8
    assert settings.broker.host == Settings().broker.host


def test_environment_beats_the_file(write_config: WriteConfig) -> None:
    path = write_config("broker:\n  port: 7500\n  max_connections: 50\n")
    settings = load(path, env={"TQ_BROKER__PORT": "7600"})
    assert settings.broker.port == 7600
    assert settings.broker.max_connections == 50


def test_overrides_beat_the_environment_and_the_file(write_config: WriteConfig) -> None:
    path = write_config("broker:\n  port: 7500\n")
    settings = load(path, env={"TQ_BROKER__PORT": "7600"}, overrides={"broker.port": 7700})
    assert settings.broker.port == 7700


def test_a_later_source_replaces_a_list_rather_than_merging_it(write_config: WriteConfig) -> None:
    path = write_config("worker:\n  queues: [a, b]\n")
    settings = load(path, env={"TQ_WORKER__QUEUES": "c"})
    assert settings.worker.queues == ("c",)


def test_tq_config_names_the_file_when_no_path_is_given(write_config: WriteConfig) -> None:
    path = write_config("broker:\n  port: 7500\n")
    assert load(env={CONFIG_ENV: str(path)}).broker.port == 7500


def test_an_explicit_path_wins_over_tq_config(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config("broker:\n  port: 7500\n")
    assert load(path, env={CONFIG_ENV: str(tmp_path / "absent.yml")}).broker.port == 7500


def test_an_empty_tq_config_means_no_file() -> None:
    assert load(env={CONFIG_ENV: ""}) == Settings()


def test_the_process_environment_is_read_when_env_is_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TQ_BROKER__MAX_CONNECTIONS", "77")
    assert load().broker.max_connections == 77


def test_an_empty_file_and_empty_sections_mean_defaults(write_config: WriteConfig) -> None:
    assert load(write_config(""), env={}) == Settings()
    assert load(write_config("# nothing yet\nbroker:\nraft:\n"), env={}) == Settings()


def test_env_names_are_case_insensitive() -> None:
    assert load(env={"tq_Broker__Port": "7601"}).broker.port == 7601


def test_env_text_becomes_ints_floats_and_booleans() -> None:
    settings = load(
        env={
            "TQ_BROKER__MAX_CONNECTIONS": "250",
            "TQ_BROKER__RETRY_JITTER": "0.25",
            "TQ_BROKER__LEASE_DURATION_S": "45",
            "TQ_API__GRPC_ENABLED": "false",
            "TQ_API__REST_ENABLED": "0",
            "TQ_API__WEBSOCKET_ENABLED": "No",
            "TQ_MONITORING__PROMETHEUS_ENABLED": "OFF",
        }
    )
    assert settings.broker.max_connections == 250
    assert settings.broker.retry_jitter == 0.25
    assert settings.broker.lease_duration_s == 45.0
    assert settings.api.grpc_enabled is False
    assert settings.api.rest_enabled is False
    assert settings.api.websocket_enabled is False
    assert settings.monitoring.prometheus_enabled is False
    assert load(env={"TQ_API__GRPC_ENABLED": "TRUE"}).api.grpc_enabled is True


def test_env_lists_are_comma_separated_with_blanks_dropped() -> None:
    settings = load(env={"TQ_WORKER__QUEUES": " emails, ,reports ,"})
    assert settings.worker.queues == ("emails", "reports")


def test_env_lists_may_be_json_arrays() -> None:
    settings = load(env={"TQ_API__CORS_ORIGINS": '["https://a.example", "https://b.example"]'})
    assert settings.api.cors_origins == ("https://a.example", "https://b.example")


def test_an_empty_env_list_is_the_empty_list() -> None:
    assert load(env={"TQ_API__CORS_ORIGINS": ""}).api.cors_origins == ()


# raft is not built yet, so load() refuses members (test_config_unbuilt); the model's
# parsing of them is kept for when it is.


def test_raft_members_can_be_written_as_id_equals_address() -> None:
    text = "node-1=10.0.0.1:7420,node-2=10.0.0.2:7420"  # as in TQ_RAFT__MEMBERS
    raft = RaftSettings.model_validate({"members": parse_text("raft", "members", text)})
    assert raft.members == (
        RaftMember(node_id="node-1", address="10.0.0.1:7420"),
        RaftMember(node_id="node-2", address="10.0.0.2:7420"),
    )


def test_raft_members_can_be_mappings_or_text() -> None:
    raft = RaftSettings.model_validate(
        {"members": [{"node_id": "a", "address": "h1:7420"}, "b=h2:7420"]}
    )
    assert [m.node_id for m in raft.members] == ["a", "b"]


def test_an_empty_env_value_sets_a_nullable_key_to_null(write_config: WriteConfig) -> None:
    path = write_config("worker:\n  default_timeout_s: 12.5\n")
    assert load(path, env={}).worker.default_timeout_s == 12.5
    assert load(path, env={"TQ_WORKER__DEFAULT_TIMEOUT_S": ""}).worker.default_timeout_s is None


def test_enum_values_are_matched_in_any_case() -> None:
    settings = load(
        env={
            "TQ_PERSISTENCE__SYNC_MODE": "RELAXED",
            "TQ_MONITORING__LOG_LEVEL": "debug",
            "TQ_WORKER__POOL": "Process",
        }
    )
    assert settings.persistence.sync_mode is SyncMode.RELAXED
    assert settings.monitoring.log_level is LogLevel.DEBUG
    assert settings.worker.pool is Pool.PROCESS


def test_unrelated_tq_variables_are_left_alone() -> None:
    # Clients and tools own names like these; only TQ_<SECTION>__<KEY> is configuration.
    assert load(env={"TQ_API_KEY": "secret", "TQ_HOME": "/x", "PATH": "/bin"}) == Settings()


def test_string_overrides_are_parsed_like_env_text() -> None:
    settings = load(
        env={},
        overrides={
            "broker.port": "7421",
            "worker.queues": "a,b",
            "raft.enabled": "false",
            "worker.default_timeout_s": "",
        },
    )
    assert settings.broker.port == 7421
    assert settings.worker.queues == ("a", "b")
    assert settings.raft.enabled is False
    assert settings.worker.default_timeout_s is None


def test_typed_overrides_are_taken_as_they_are() -> None:
    settings = load(
        env={},
        overrides={"worker.queues": ["x"], "persistence.data_dir": Path("/var/lib/tq")},
    )
    assert settings.worker.queues == ("x",)
    assert settings.persistence.data_dir == Path("/var/lib/tq")


def test_a_cluster_node_configuration_loads(write_config: WriteConfig) -> None:
    path = write_config(
        """
broker:
  host: 0.0.0.0
  node_id: node-2
raft:
  enabled: true
  etcd_endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379, http://10.0.0.3:2379]
  advertise_address: 10.0.0.2:7420
  members: [node-1=10.0.0.1:7420, node-2=10.0.0.2:7420, node-3=10.0.0.3:7420]
auth:
  enabled: true
  rate_limits: {submit: {rate: 500, burst: 1000}}
"""
    )
    settings = load(path, env={})
    assert settings.raft.enabled and settings.node_id == "node-2"
    assert [m.node_id for m in settings.raft.members] == ["node-1", "node-2", "node-3"]
    assert settings.advertise_address == "10.0.0.2:7420"


def test_a_managed_etcd_needs_the_members_it_forms_a_cluster_of() -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={}, overrides={"raft.enabled": "true", "raft.manage_local_etcd": "true"})
    assert "raft.members" in caught.value.message
    assert "must list every node" in caught.value.message
