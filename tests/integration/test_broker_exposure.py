"""Safe defaults: a broker that would listen beyond loopback with nobody authenticated refuses
to start (one line, exit 2, nothing opened) unless ``--insecure`` / ``auth.insecure`` says so,
and then warns; mutual TLS counts as authentication; loopback needs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_procs import child_env, run_tq, stop, wait_for
from tests.integration.tls_files import make_certs
from tq.errors import TqError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)


def test_a_broker_on_every_interface_without_auth_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_tq(
        "broker", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data), url=None
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "error: [CONFIG_ERROR] refusing to listen on broker.host=0.0.0.0 with nobody "
        "authenticated (auth.enabled and auth.require_client_cert are off)"
    )
    assert line.endswith("or accept the risk with --insecure (auth.insecure=true)")
    assert not data.exists()  # refused before the data dir was opened


def test_an_exposed_rest_or_grpc_door_is_refused_too(tmp_path: Path) -> None:
    for key in ("api.rest_host", "api.grpc_host"):
        with pytest.raises(
            TqError, match=rf"exited with 2: .*refusing to listen on {key}=0\.0\.0\.0"
        ):
            BrokerProcess(tmp_path / key.replace(".", "-"), settings={key: "0.0.0.0"}).start()


def test_insecure_starts_the_exposed_broker_with_a_warning(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    log = tmp_path / "broker.log"
    argv = [
        sys.executable, "-m", "tq", "broker", "--host", "0.0.0.0", "--port", "0", "--insecure",
        "--data-dir", str(tmp_path / "data"), "--ready-file", str(ready),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        try:
            wait_for("the broker to listen", lambda: ready.exists() or proc.poll() or None)
            assert proc.poll() is None, log.read_text()
            assert json.loads(ready.read_text())["host"] == "0.0.0.0"
        finally:
            assert stop(proc) == 0
    text = log.read_text()
    assert "WARNING tq.broker.exposure: broker.insecure listening=broker.host=0.0.0.0:" in text


def test_the_insecure_setting_does_what_the_flag_does(tmp_path: Path) -> None:
    settings = {"api.rest_host": "0.0.0.0", "auth.insecure": "true"}
    with BrokerProcess(tmp_path / "data", settings=settings) as b:
        wait_for(
            "the warning",
            lambda: "broker.insecure listening=api.rest_host=0.0.0.0" in b.log_tail() or None,
        )


def test_mutual_tls_is_authentication_enough_to_listen_everywhere(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    settings = {"api.grpc_host": "0.0.0.0"}
    with BrokerProcess(tmp_path / "data", tls=certs.broker(mtls=True), settings=settings) as b:
        assert "broker.insecure" not in b.log_tail()


def test_loopback_needs_no_setting(tmp_path: Path) -> None:
    settings = {"api.rest_host": "localhost", "api.grpc_host": "::1"}
    with BrokerProcess(tmp_path / "data", settings=settings) as b:
        assert "broker.insecure" not in b.log_tail()
