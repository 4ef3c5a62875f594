"""A setting of a feature not built yet is refused unless at its default, from every source,
before any rule it would break; its default is accepted; the registry holds only real keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tq.cli import cli
from tq.config import Settings, dump, load, setting_keys
from tq.config.unbuilt import UNBUILT
from tq.errors import ConfigError

#: A valid-looking value other than the default, for every key of UNBUILT.
NOT_DEFAULT: dict[str, Any] = {
    "api.dashboard_enabled": True,
}
DEFAULTS = dump(Settings())
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"


def text(value: object) -> str:
    """A value as it is written in an env variable or after --set."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def default(key: str) -> Any:
    section, name = key.split(".")
    return DEFAULTS[section][name]


def refusal(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**kwargs)
    return caught.value.message


def shown(value: object) -> str:
    """How an error message spells a default: YAML's null/true/false, else Python's repr."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)


def assert_refused(message: str, key: str, origin: str) -> None:
    assert message.startswith(f"invalid configuration: {key} = "), message
    assert message.endswith(
        f" from {origin}: not available yet \N{EM DASH} {UNBUILT[key]}; "
        f"leave it at its default {shown(default(key))}"
    ), message


def test_the_registry_lists_only_settings_of_the_model() -> None:
    stale = sorted(set(UNBUILT) - set(setting_keys()))
    assert stale == [], f"tq.config.unbuilt.UNBUILT lists keys the model no longer has: {stale}"


def test_every_unbuilt_setting_has_a_sample_value_here() -> None:
    assert set(NOT_DEFAULT) == set(UNBUILT), "give NOT_DEFAULT a value for each UNBUILT key"


def comments_above_each_key(text: str) -> dict[str, str]:
    """Dotted key -> the comment lines right above it in config.example.yml, joined."""
    found: dict[str, str] = {}
    section = ""
    comment: list[str] = []
    for line in text.splitlines():
        if match := re.match(r"^(\w+):", line):
            section, comment = match.group(1), []
        elif match := re.match(r"^  (\w+):", line):
            found[f"{section}.{match.group(1)}"] = " ".join(comment)
            comment = []
        elif line.strip().startswith("#"):
            comment.append(line.strip().lstrip("# "))
    return found


def test_the_example_file_marks_exactly_the_unbuilt_settings() -> None:
    comments = comments_above_each_key(EXAMPLE.read_text())
    marked = {key for key, comment in comments.items() if "Not available yet" in comment}
    assert marked == set(UNBUILT), "config.example.yml: mark unbuilt keys, and only those"
    for key, why in UNBUILT.items():
        assert f"Not available yet: {why}." in comments[key]


def test_the_defaults_of_unbuilt_settings_claim_nothing() -> None:
    settings = Settings()
    assert settings.api.dashboard_enabled is False
    assert settings.broker.priority_aging_step == 0  # 0: no aging
    assert settings.raft.enabled is False
    assert settings.auth.enabled is False
    assert settings.auth.tls_enabled is False


@pytest.mark.parametrize("key", sorted(UNBUILT))
def test_a_value_from_the_file_is_refused_naming_key_file_and_line(
    key: str, tmp_path: Path
) -> None:
    section, name = key.split(".")
    path = tmp_path / "tq.yml"
    path.write_text(yaml.safe_dump({section: {name: NOT_DEFAULT[key]}}))
    assert_refused(refusal(path=path, env={}), key, f"config file {path} line 2")


@pytest.mark.parametrize("key", sorted(UNBUILT))
def test_a_value_from_the_environment_is_refused_naming_the_variable(key: str) -> None:
    variable = "TQ_" + key.upper().replace(".", "__")
    message = refusal(env={variable: text(NOT_DEFAULT[key])})
    assert_refused(message, key, f"environment variable {variable}")


@pytest.mark.parametrize("key", sorted(UNBUILT))
def test_a_value_from_a_set_flag_is_refused_naming_the_override(key: str) -> None:
    message = refusal(env={}, overrides={key: text(NOT_DEFAULT[key])})
    assert_refused(message, key, f"override {key}")


@pytest.mark.parametrize("key", sorted(UNBUILT))
def test_the_default_value_is_accepted_from_every_source(key: str, tmp_path: Path) -> None:
    section, name = key.split(".")
    value = default(key)
    path = tmp_path / "tq.yml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    variable = "TQ_" + key.upper().replace(".", "__")
    assert load(path, env={}) == Settings()
    assert load(env={variable: text(value)}) == Settings()
    assert load(env={}, overrides={key: text(value)}) == Settings()
    assert load(env={}, overrides={key: value}) == Settings()


def test_the_example_message_reads_as_one_sentence() -> None:
    message = refusal(env={"TQ_API__DASHBOARD_ENABLED": "true"})
    assert message == (
        "invalid configuration: api.dashboard_enabled = 'true' from environment variable "
        "TQ_API__DASHBOARD_ENABLED: not available yet \N{EM DASH} the web dashboard comes "
        "with the dashboard work; leave it at its default false"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"api.dashboard_enabled": "maybe"},  # not even a boolean
        {"api.dashboard_enabled": "2"},  # nor this
    ],
)
def test_a_refused_setting_is_reported_as_refused_not_as_a_broken_rule(
    overrides: dict[str, str],
) -> None:
    message = refusal(env={}, overrides=overrides)
    assert message.count("not available yet") == len(overrides)
    for unwanted in ("needs", "must", "input should"):
        assert unwanted not in message


def test_refused_settings_and_other_problems_are_reported_together() -> None:
    message = refusal(env={"TQ_API__DASHBOARD_ENABLED": "1", "TQ_BROKER__PORT": "x"})
    assert message.startswith("invalid configuration (2 problems):")
    assert (
        "api.dashboard_enabled = '1' from environment variable TQ_API__DASHBOARD_ENABLED: "
        "not available" in message
    )
    assert "broker.port = 'x' from environment variable TQ_BROKER__PORT: input should" in message


@pytest.mark.parametrize(
    "command", [["config"], ["worker"], ["status", "00000000-0000-0000-0000-000000000000"]]
)
def test_every_command_that_loads_the_configuration_refuses_it(command: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--set", "api.dashboard_enabled=true", *command])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(
        "error: [CONFIG_ERROR] invalid configuration: api.dashboard_enabled = 'true'"
    )
    assert "not available yet" in line


def test_a_built_cluster_setting_is_checked_by_its_own_rules() -> None:
    message = refusal(env={}, overrides={"raft.enabled": "true"})
    assert "not available yet" not in message
    assert "raft.etcd_endpoints" in message and "at least one etcd endpoint" in message
