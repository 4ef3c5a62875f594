"""What ``tq dev`` prints: every door's address as bound, and commands that work as typed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tq.cli.devbanner import Commands, addresses, dial_host, render, tries
from tq.config import load

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PORTS = {"port": 7420, "rest_port": 8080, "grpc_port": 50051, "metrics_port": 9420}
DEFAULT_URL = "tq://127.0.0.1:7420"
BOTH = ["examples.tasks", "tq.worker.examples"]


@pytest.fixture
def path_without_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell whose PATH lacks this venv (as after `make run`, which never activates it)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(d for d in dirs if Path(d) != BIN))
    monkeypatch.delenv("TQ_BROKER_URL", raising=False)


def test_every_door_has_its_address_and_the_dashboard_says_it_is_not_built() -> None:
    rows = dict(addresses(load(None), DEFAULT_URL, PORTS))
    assert rows == {
        "TCP": DEFAULT_URL,
        "REST": "http://127.0.0.1:8080/v1  (e.g. http://127.0.0.1:8080/v1/stats)",
        "docs": "http://127.0.0.1:8080/docs",
        "WebSocket": "ws://127.0.0.1:8080/ws",
        "gRPC": "127.0.0.1:50051",
        "metrics": "http://127.0.0.1:9420/metrics",
        "dashboard": "not built yet",
    }


def test_with_tls_every_address_is_a_tls_one() -> None:
    tls = {"auth.tls_cert_file": "/etc/tq/c.pem", "auth.tls_key_file": "/etc/tq/k.pem"}
    rows = dict(addresses(load(None, overrides=tls), "tqs://127.0.0.1:7420", PORTS))
    assert rows["TCP"] == "tqs://127.0.0.1:7420"
    assert rows["docs"] == "https://127.0.0.1:8080/docs"
    assert rows["WebSocket"] == "wss://127.0.0.1:8080/ws"
    assert rows["metrics"] == "https://127.0.0.1:9420/metrics"


def test_a_door_turned_off_says_which_setting_turned_it_off() -> None:
    settings = load(
        None,
        overrides={
            "api.rest_enabled": "false",
            "api.grpc_enabled": "false",
            "monitoring.prometheus_enabled": "false",
        },
    )
    rows = dict(addresses(settings, DEFAULT_URL, {"port": 7420, "rest_port": 8080}))
    assert "REST" not in rows and "docs" not in rows
    assert rows["WebSocket"] == "ws://127.0.0.1:8080/ws"
    assert rows["gRPC"] == "off (api.grpc_enabled is false)"
    assert rows["metrics"] == "off (monitoring.prometheus_enabled is false)"


@pytest.mark.parametrize(
    ("host", "dialled"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("10.1.2.3", "10.1.2.3")],
)
def test_a_wildcard_or_ipv6_listener_is_shown_as_a_client_dials_it(host: str, dialled: str) -> None:
    assert dial_host(host) == dialled


@pytest.mark.skipif(BIN != REPO / ".venv" / "bin", reason="not run from the repository's .venv")
@pytest.mark.usefixtures("path_without_venv")
def test_from_the_repository_root_the_venv_s_commands_are_shown_by_their_paths() -> None:
    cmds = Commands.here(REPO)
    assert cmds == Commands(".venv/bin/tq", ".venv/bin/python", "source .venv/bin/activate")
    assert tries(DEFAULT_URL, BOTH, cmds, REPO) == [
        ".venv/bin/tq submit echo '{\"x\": 1}' --wait",
        ".venv/bin/tq stats",
        ".venv/bin/tq workers",
        ".venv/bin/python examples/quickstart.py",
        "(or `source .venv/bin/activate` first, then type tq and python)",
    ]


@pytest.mark.usefixtures("path_without_venv")
def test_elsewhere_they_are_absolute_and_another_port_is_named(tmp_path: Path) -> None:
    cmds = Commands.here(tmp_path)
    assert cmds.tq == str(BIN / "tq")
    url = "tq://127.0.0.1:7421"
    assert tries(url, ["tq.worker.examples"], cmds, tmp_path) == [
        f"{BIN / 'tq'} --url {url} submit echo '{{\"x\": 1}}' --wait",
        f"{BIN / 'tq'} --url {url} stats",
        f"{BIN / 'tq'} --url {url} workers",
        f"(or `source {BIN / 'activate'}` first, then type tq and python)",
    ]


def test_with_the_venv_on_path_the_commands_are_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert Commands.here(REPO) == Commands("tq", "python", None)


def test_a_module_of_the_user_s_gets_no_example_it_does_not_serve(tmp_path: Path) -> None:
    assert tries(DEFAULT_URL, ["myapp.tasks"], Commands("tq", "python", None), tmp_path) == [
        "tq stats",
        "tq workers",
    ]


def test_the_banner_names_each_child_and_how_to_stop() -> None:
    cmds = Commands("tq", "python", None)
    text = render(load(None), DEFAULT_URL, PORTS, BOTH, (10, [11, 12]), REPO, cmds)
    lines = text.splitlines()
    assert lines[:3] == [
        "tq dev: broker (pid 10), data in .tq-data",
        "        worker (pid 11) of examples.tasks, tq.worker.examples; queues default",
        "        worker (pid 12) of examples.tasks, tq.worker.examples; queues default",
    ]
    assert "  TCP        tq://127.0.0.1:7420" in lines
    assert "  try:       tq submit echo '{\"x\": 1}' --wait" in lines
    assert lines[-1] == "  stop:      Ctrl-C"
