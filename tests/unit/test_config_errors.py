"""Every bad configuration raises ConfigError naming the dotted key, the value, where it came
from and why; unknown keys are typos, wherever they appear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from tq.config import CONFIG_ENV, Settings, load
from tq.errors import ConfigError, ErrorCode


def load_error(
    path: Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, env=env or {}, overrides=overrides)
    assert caught.value.code is ErrorCode.CONFIG_ERROR
    return caught.value.message


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "tq.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- values out of range, of the wrong type, or breaking a rule -------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"TQ_BROKER__PORT": "abc"},
            "broker.port = 'abc' from environment variable TQ_BROKER__PORT: "
            "input should be a valid integer",
        ),
        (
            {"TQ_BROKER__PORT": "70000"},
            "broker.port = '70000' from environment variable TQ_BROKER__PORT: "
            "input should be less than or equal to 65535",
        ),
        (
            {"TQ_BROKER__LEASE_DURATION_S": "-1"},
            "broker.lease_duration_s = '-1' from environment variable "
            "TQ_BROKER__LEASE_DURATION_S: input should be greater than 0",
        ),
        ({"TQ_BROKER__IDLE_TIMEOUT_S": "nan"}, "broker.idle_timeout_s = 'nan'"),
        (
            {"TQ_BROKER__MAX_CLAIM_BATCH": "1001"},
            "broker.max_claim_batch = '1001' from environment variable "
            "TQ_BROKER__MAX_CLAIM_BATCH: input should be less than or equal to 1000",
        ),
        ({"TQ_BROKER__RETRY_BACKOFF_MAX_S": "inf"}, "broker.retry_backoff_max_s = 'inf'"),
        (
            {"TQ_API__GRPC_ENABLED": "maybe"},
            "api.grpc_enabled = 'maybe' from environment variable TQ_API__GRPC_ENABLED: "
            "input should be a valid boolean",
        ),
        (
            {"TQ_PERSISTENCE__SYNC_MODE": "sometimes"},
            "persistence.sync_mode = 'sometimes' from environment variable "
            "TQ_PERSISTENCE__SYNC_MODE: input should be 'fsync' or 'relaxed'",
        ),
        (
            {"TQ_WORKER__BROKER_URL": "http://x:1"},
            "worker.broker_url = 'http://x:1' from environment variable TQ_WORKER__BROKER_URL: "
            "must be a URL like tq://host:port",
        ),
        (
            {"TQ_WORKER__QUEUES": "a,b,a"},
            "worker.queues = ['a', 'b', 'a'] from environment variable TQ_WORKER__QUEUES: "
            "lists 'a' twice",
        ),
        (
            {"TQ_WORKER__QUEUES": ""},
            "worker.queues = [] from environment variable TQ_WORKER__QUEUES: "
            "tuple should have at least 1 item",
        ),
        (
            {"TQ_PERSISTENCE__DATA_DIR": " "},
            "persistence.data_dir = ' ' from environment variable TQ_PERSISTENCE__DATA_DIR: "
            "must be a non-empty path",
        ),
        (
            {"TQ_BROKER__NODE_ID": "node 1"},
            "broker.node_id = 'node 1' from environment variable TQ_BROKER__NODE_ID: "
            "must be 1-64 ASCII letters",
        ),
        (
            {"TQ_API__CORS_ORIGINS": "https://a.example,localhost"},
            "api.cors_origins[1] = 'localhost' from environment variable "
            "TQ_API__CORS_ORIGINS: must be '*' or an origin like https://example.com",
        ),
        (
            {"TQ_API__CORS_ORIGINS": "[1,"},
            "api.cors_origins = '[1,' from environment variable TQ_API__CORS_ORIGINS: "
            "is not a valid JSON list",
        ),
    ],
)
def test_a_bad_env_value_names_key_value_variable_and_reason(
    env: dict[str, str], expected: str
) -> None:
    assert expected in load_error(env=env)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"broker.lease_check_interval_s": 30},
            "broker.lease_check_interval_s = 30.0 from override broker.lease_check_interval_s: "
            "must be less than broker.lease_duration_s, or leases outlive their term "
            "(broker.lease_duration_s = 30.0 from the default)",
        ),
        (
            {"broker.heartbeat_interval_s": 40},
            "broker.heartbeat_interval_s = 40.0 from override broker.heartbeat_interval_s: "
            "must be less than broker.lease_duration_s",
        ),
        (
            {"broker.max_frame_size_bytes": 1024},
            "broker.max_payload_size_bytes = 10485760 from the default: must be at least 4 KiB "
            "below broker.max_frame_size_bytes, or a task with a full payload and its other "
            "fields cannot be sent "
            "(broker.max_frame_size_bytes = 1024 from override broker.max_frame_size_bytes)",
        ),
        (
            {"broker.retry_backoff_max_s": 0.5},
            "broker.retry_backoff_max_s = 0.5 from override broker.retry_backoff_max_s: "
            "must be at least broker.retry_backoff_base_s",
        ),
        (
            {"broker.default_claim_batch": 5000},
            "broker.default_claim_batch = 5000 from override broker.default_claim_batch: "
            "must be at most broker.max_claim_batch",
        ),
        (
            {"api.grpc_port": 8080},
            "api.grpc_port = 8080 from override api.grpc_port: clashes with api.rest_port "
            "(api.rest_port = 8080 from the default)",
        ),
        (
            {"monitoring.prometheus_host": "0.0.0.0", "monitoring.prometheus_port": 7420},
            "monitoring.prometheus_port = 7420 from override monitoring.prometheus_port: "
            "clashes with broker.port",
        ),
    ],
)
def test_a_rule_between_settings_names_both_keys_and_their_origins(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in load_error(overrides=overrides)


_CLUSTER = {"raft": {"enabled": True, "etcd_endpoints": ["http://e:2379"]}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"auth": {"tls_cert_file": "c"}}, "needs auth.tls_key_file as well"),
        ({"auth": {"tls_key_file": "k"}}, "needs auth.tls_cert_file as well"),
        ({"auth": {"tls_ca_file": "ca.pem"}}, "needs auth.tls_cert_file"),
        (
            {"auth": {"tls_cert_file": "c", "tls_key_file": "k", "require_client_cert": True}},
            "needs auth.tls_ca_file",
        ),
        ({"raft": {"enabled": True}}, "must name at least one etcd endpoint"),
        ({"raft": {"members": ["a=h:1", "b=h"]}}, "must be host:port"),
        ({"raft": {"members": [{"node_id": "a"}]}}, "Field required"),
        ({"raft": {"members": ["a=h:1", "a=h:2"]}}, "names node 'a' twice"),
        ({"raft": {"manage_local_etcd": True, "etcd_peer_port": 2379}}, "must differ from"),
        ({"raft": {**_CLUSTER["raft"], "members": ["x=h:1"]}}, "must be one of raft.members"),
        (
            {**_CLUSTER, "broker": {"host": "0.0.0.0"}},
            "must be set when broker.host listens on every interface",
        ),
    ],
)
def test_the_rules_of_unbuilt_sections_stay_in_the_model_for_when_they_are_built(
    data: dict[str, Any], expected: str
) -> None:
    # load() refuses these keys before any rule (test_config_unbuilt); the model keeps them.
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings.model_validate(data)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"broker.port": True}, "broker.port = true from override broker.port: input should be"),
        ({"worker.default_timeout_s": False}, "worker.default_timeout_s = false"),
        ({"persistence.data_dir": 5}, "persistence.data_dir = 5 from override "),
        ({"worker.queues": 5}, "worker.queues = 5 from override worker.queues: input should be"),
        ({"broker.port": 1.5}, "broker.port = 1.5 from override broker.port: input should be"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_coerced(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in load_error(overrides=overrides)


def test_yaml_booleans_are_not_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  port: yes\n")
    assert "a number, not a boolean" in load_error(path)


def test_a_bad_value_in_the_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  host: 127.0.0.1\n  port: 70000\n")
    message = load_error(path)
    assert f"broker.port = 70000 from config file {path} line 3: input should be" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  port: -1\nworker:\n  concurrency: 0\n")
    message = load_error(path, env={"TQ_API__REST_PORT": "x"})
    assert message.startswith("invalid configuration (3 problems):")
    for key in ("broker.port", "worker.concurrency", "api.rest_port"):
        assert key in message


def test_a_rule_names_the_line_of_a_value_set_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  lease_duration_s: 5\n")
    message = load_error(path)
    assert (
        "broker.lease_check_interval_s = 10.0 from the default: must be less than "
        f"broker.lease_duration_s, or leases outlive their term (broker.lease_duration_s = "
        f"5.0 from config file {path} line 2)"
    ) in message


# -- unknown keys (typos) ---------------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_named_with_its_line_and_a_suggestion(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "broker:\n  port: 7420\n  max_conections: 10\n")
    message = load_error(path)
    assert (
        "unknown key broker.max_conections (did you mean broker.max_connections?) "
        f"in config file {path} line 3"
    ) in message


def test_an_unknown_section_in_the_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "brokr:\n  port: 7420\n")
    assert (
        f"unknown section 'brokr' (did you mean broker?) in config file {path} line 1"
        in load_error(path)
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"TQ_BROKER__PROT": "1"},
            "unknown key broker.prot (did you mean broker.port?) "
            "from environment variable TQ_BROKER__PROT",
        ),
        (
            {"TQ_BROKR__PORT": "1"},
            "unknown section 'brokr' (did you mean broker?) from environment variable "
            "TQ_BROKR__PORT",
        ),
        (
            {"TQ_BROKER_PORT": "1"},
            "environment variable TQ_BROKER_PORT is not a setting: did you mean TQ_BROKER__PORT?",
        ),
        (
            {"TQ_BROKER__PORT": "1", "tq_broker__port": "2"},
            "sets broker.port again",
        ),
    ],
)
def test_an_unknown_env_setting_is_an_error_naming_the_variable(
    env: dict[str, str], expected: str
) -> None:
    assert expected in load_error(env=env)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"worker.concurency": 2},
            "unknown key worker.concurency (did you mean worker.concurrency?) "
            "from override worker.concurency",
        ),
        ({"wrker.concurrency": 2}, "unknown section 'wrker' (did you mean worker?)"),
        ({"port": 2}, "override key 'port' must look like section.key"),
        ({"broker.port.x": 2}, "unknown key broker.port.x"),
    ],
)
def test_an_unknown_override_is_an_error_naming_the_key(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in load_error(overrides=overrides)


# -- files that cannot be used ----------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  port: 7420\n  host: [127.0.0.1\nworker: {}\n")
    message = load_error(path)
    assert f"config file {path} line 4" in message
    assert "malformed YAML" in message


def test_a_duplicate_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  port: 1\n  port: 2\n")
    assert (
        f"duplicate key broker.port in config file {path} line 3 (first set on line 2)"
        in load_error(path)
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    assert f"config file {path} does not exist" in load_error(path)


def test_a_missing_file_named_by_tq_config_says_so(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    message = load_error(env={CONFIG_ENV: str(path)})
    assert f"config file {path} (named by TQ_CONFIG) does not exist" in message


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, b"broker:\n  host: \xff\n")
    assert f"config file {path} cannot be read: not UTF-8" in load_error(path)


def test_a_file_whose_top_level_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "- broker\n- worker\n")
    assert "the top level must be a mapping of sections" in load_error(path)


def test_a_section_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: 7420\n")
    assert (
        f"section broker in config file {path} line 1 must be a mapping of settings, not int"
        in load_error(path)
    )


def test_python_tags_in_yaml_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  host: !!python/object/apply:os.getcwd []\n")
    assert f"config file {path} line 2" in load_error(path)
