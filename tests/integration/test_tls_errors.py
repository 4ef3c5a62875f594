"""Every way a TLS connection goes wrong is one line saying what to do: a plaintext client on a
TLS port (the broker answers a plaintext NACK), TLS to a plaintext broker, a broker
certificate from an unknown CA or for another name, and mutual TLS without (or with a
stranger's) client certificate. The CLI prints the same lines, without a traceback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.integration.cli_procs import child_env, run_tq
from tests.integration.tls_files import Certs, make_certs
from tq import AsyncClient, Client, TlsConfig
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.errors import AuthError, ConfigError, ErrorCode, ProtocolError
from tq.protocol import LENGTH_PREFIX_SIZE, ClientConnection, Nack, decode_payload
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
T = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("tls") / "data", tls=certs.broker()) as b:
        yield b


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("mtls") / "data", tls=certs.broker(mtls=True)) as b:
        yield b


def refusal(url: str, tls: TlsConfig | None = None) -> ProtocolError:
    """The error of one connection attempt (no retrying: these are final)."""
    with (
        pytest.raises(ProtocolError) as caught,
        Client(url, tls=tls, reconnect=False, connect_timeout=T) as client,
    ):
        client.ping()
    return caught.value


# -- plaintext and TLS on the wrong ports ------------------------------------------------------


def test_a_plaintext_client_on_the_tls_port_is_told_to_use_tqs(broker: BrokerProcess) -> None:
    plain = broker.url.replace("tqs://", "tq://")
    error = refusal(plain)
    assert error.code == ErrorCode.PROTOCOL_ERROR
    assert error.message.startswith("this port speaks TLS: connect with tqs://")


def test_the_plaintext_nack_comes_before_the_broker_closes(broker: BrokerProcess) -> None:
    """What any client (in any language) sees: a well-formed NACK for the connection."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=T) as sock:
        sock.sendall(ClientConnection(client_name="raw").hello())
        received = b""
        while chunk := sock.recv(65536):  # until the broker closes
            received += chunk
    size = int.from_bytes(received[:LENGTH_PREFIX_SIZE], "big")
    assert len(received) == LENGTH_PREFIX_SIZE + size  # one frame, then the close
    nack = decode_payload(received[LENGTH_PREFIX_SIZE], memoryview(received)[5:])
    assert isinstance(nack, Nack)
    assert nack.request_id == 0
    assert nack.code == ErrorCode.PROTOCOL_ERROR
    assert "this port speaks TLS" in nack.message


def test_a_client_that_says_nothing_on_the_tls_port_is_closed_after_the_handshake_timeout(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs
) -> None:
    settings = {"broker.handshake_timeout_s": 0.5}
    with (
        BrokerProcess(
            tmp_path_factory.mktemp("quiet") / "d", tls=certs.broker(), settings=settings
        ) as b,
        socket.create_connection(("127.0.0.1", b.port), timeout=T) as sock,
    ):
        assert sock.recv(1) == b""  # closed by the broker, well before our timeout


def test_the_cli_prints_the_plaintext_refusal_as_one_line(broker: BrokerProcess) -> None:
    plain = broker.url.replace("tqs://", "tq://")
    done = run_tq("stats", url=plain)
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: [PROTOCOL_ERROR] this port speaks TLS: connect with tqs://")


def test_tls_to_a_plaintext_broker_is_told_to_use_tq(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with BrokerProcess(tmp_path_factory.mktemp("plain") / "d") as plain:
        url = plain.url.replace("tq://", "tqs://")
        error = refusal(url)
    assert error.message.startswith(f"{url}: no TLS handshake (")
    assert error.message.endswith(f"this broker serves plaintext: use {plain.url}")


# -- the broker's certificate ------------------------------------------------------------------


def test_a_broker_certificate_from_an_unknown_ca_is_refused(
    broker: BrokerProcess, certs: Certs
) -> None:
    error = refusal(broker.url, TlsConfig(ca_file=certs.other_ca))
    assert error.message.startswith(
        f"{broker.url}: the broker's TLS certificate was refused (unable to get local issuer "
        "certificate): give the CA that signed it"
    )


def test_the_system_cas_do_not_trust_a_private_ca(broker: BrokerProcess) -> None:
    assert "the broker's TLS certificate was refused" in refusal(broker.url).message


def test_a_certificate_for_another_name_is_refused_naming_the_mismatch(
    broker: BrokerProcess, certs: Certs
) -> None:
    url = f"tqs://localhost:{broker.port}"  # the certificate holds 127.0.0.1 only
    error = refusal(url, TlsConfig(ca_file=certs.ca))
    assert "Hostname mismatch" in error.message
    assert error.message.startswith(f"{url}: the broker's TLS certificate was refused (")


def test_the_cli_verifies_against_worker_tls_ca_file(broker: BrokerProcess, certs: Certs) -> None:
    done = run_tq("--set", f"worker.tls_ca_file={certs.ca}", "-o", "json", "stats", url=broker.url)
    assert done.returncode == 0, done.stderr
    wrong = run_tq("--set", f"worker.tls_ca_file={certs.other_ca}", "stats", url=broker.url)
    assert wrong.returncode == 2
    (line,) = wrong.stderr.splitlines()
    assert line.startswith(f"error: [PROTOCOL_ERROR] {broker.url}: the broker's TLS certificate")


def test_the_ca_can_come_from_the_environment(broker: BrokerProcess, certs: Certs) -> None:
    env = child_env(broker.url, TQ_WORKER__TLS_CA_FILE=str(certs.ca))
    done = subprocess.run(
        [sys.executable, "-m", "tq", "stats"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- mutual TLS --------------------------------------------------------------------------------


def test_mutual_tls_without_a_client_certificate_is_refused_in_one_line(
    mtls: BrokerProcess,
) -> None:
    with (
        pytest.raises(AuthError) as caught,
        Client(mtls.url, tls=mtls.client_tls(), reconnect=False) as client,
    ):
        client.ping()
    assert caught.value.code == ErrorCode.UNAUTHENTICATED
    assert caught.value.message.startswith(
        "this broker requires a TLS client certificate signed by its auth.tls_ca_file"
    )
    assert "set worker.tls_cert_file and worker.tls_key_file" in caught.value.message


def test_mutual_tls_with_a_strangers_certificate_is_refused(
    mtls: BrokerProcess, certs: Certs
) -> None:
    error = refusal(mtls.url, mtls.client_tls(certs.stranger_cert, certs.stranger_key))
    assert error.message.startswith(f"{mtls.url}: the broker ")
    assert "refused our TLS client certificate" in error.message


def test_mutual_tls_with_a_client_certificate_of_the_ca_is_served(
    mtls: BrokerProcess, certs: Certs
) -> None:
    async def go() -> None:
        tls = mtls.client_tls(certs.client_cert, certs.client_key)
        async with AsyncClient(mtls.url, tls=tls) as client:
            task_id = await client.submit("echo", b"m", queue="mtls")
            assert (await client.status(task_id)).queue == "mtls"

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_cli_presents_worker_tls_cert_file_or_the_tls_flags(
    mtls: BrokerProcess, certs: Certs
) -> None:
    sets = [
        "--set", f"worker.tls_ca_file={certs.ca}",
        "--set", f"worker.tls_cert_file={certs.client_cert}",
        "--set", f"worker.tls_key_file={certs.client_key}",
    ]  # fmt: skip
    assert run_tq(*sets, "stats", url=mtls.url).returncode == 0
    flags = ["--tls-ca-file", str(certs.ca), "--tls-cert-file", str(certs.client_cert)]
    assert (
        run_tq(*flags, "stats", "--tls-key-file", str(certs.client_key), url=mtls.url).returncode
        == 0
    )
    bare = run_tq(*sets[:2], "stats", url=mtls.url)
    assert bare.returncode == 2
    (line,) = bare.stderr.splitlines()
    assert line.startswith("error: [UNAUTHENTICATED] this broker requires a TLS client cert")


def test_mutual_tls_holds_on_rest_and_grpc_too(mtls: BrokerProcess, certs: Certs) -> None:
    ca = ssl.create_default_context(cafile=str(certs.ca))
    rest = f"https://127.0.0.1:{mtls.ports['rest_port']}/v1/stats"
    with pytest.raises(httpx.HTTPError):
        httpx.get(rest, verify=ca, timeout=T)
    ca.load_cert_chain(certs.client_cert, certs.client_key)
    assert httpx.get(rest, verify=ca, timeout=T).status_code == 200

    target = f"127.0.0.1:{mtls.ports['grpc_port']}"
    request = pb.GetTaskRequest(id="00000000-0000-0000-0000-000000000000")
    bare = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    with grpc.secure_channel(target, bare) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            TaskQueueStub(channel).GetTask(request, timeout=T)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    full = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    with grpc.secure_channel(target, full) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            TaskQueueStub(channel).GetTask(request, timeout=T)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # served: the task is unknown


# -- settings ----------------------------------------------------------------------------------


def test_tls_settings_with_a_plaintext_url_are_refused_when_the_client_is_made(
    certs: Certs,
) -> None:
    with pytest.raises(ConfigError, match="is plaintext: use tqs://"):
        Client("tq://127.0.0.1:7420", tls=TlsConfig(ca_file=certs.ca))


def test_a_missing_ca_file_is_named_when_the_client_is_made(certs: Certs) -> None:
    missing = certs.ca.with_name("nope.pem")
    with pytest.raises(ConfigError, match=f"TLS ca_file {missing}: cannot load it"):
        Client("tqs://127.0.0.1:7420", tls=TlsConfig(ca_file=missing))


def test_a_broker_whose_certificate_does_not_load_stops_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    data = tmp_path / "data"
    done = run_tq(
        "broker", "--port", "0", "--data-dir", str(data),
        "--set", f"auth.tls_cert_file={missing}", "--set", f"auth.tls_key_file={missing}",
        url=None,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: [CONFIG_ERROR] auth.tls_cert_file {missing} with ")
    assert "cannot load them: no such file" in line
    assert not data.exists()
