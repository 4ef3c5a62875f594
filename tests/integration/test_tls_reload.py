"""SIGHUP reloads the broker's certificate without dropping connections: new handshakes on every
door use the new one, open connections go on, and unusable files keep the running one."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import grpc
import httpx
import pytest

from tests.integration.cli_procs import wait_for
from tests.integration.tls_files import Certs, make_certs
from tq import Client, TlsConfig
from tq.api._pb import tq_pb2 as pb
from tq.api._pb.tq_pb2_grpc import TaskQueueStub
from tq.errors import ProtocolError
from tq.testing import BrokerProcess, BrokerTls

pytestmark = pytest.mark.timeout(120)
T = 10.0


def install(certs: Certs, cert: Path, key: Path) -> None:
    """Put ``certs``' broker certificate where the broker reads its own (as a renewal does)."""
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())


def reloads(b: BrokerProcess, event: str) -> int:
    return b.log_path.read_text().count(event)


def hup(b: BrokerProcess, event: str = "tls.reloaded") -> None:
    before = reloads(b, event)
    b.signal(signal.SIGHUP)
    wait_for(f"{event} in the broker's log", lambda: reloads(b, event) > before or None)


def served(url: str, ca: Path) -> bool:
    """Whether a new connection verifying against ``ca`` is served (else its certificate was
    refused: any other failure raises)."""
    try:
        with Client(url, tls=TlsConfig(ca_file=ca), reconnect=False) as client:
            client.ping()
    except ProtocolError as e:
        if "the broker's TLS certificate was refused" not in e.message:
            raise
        return False
    return True


def test_sighup_swaps_the_certificate_for_new_connections_only(tmp_path: Path) -> None:
    old, new = make_certs(tmp_path / "old"), make_certs(tmp_path / "new")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    install(old, cert, key)
    with BrokerProcess(tmp_path / "data", tls=BrokerTls(cert, key, old.ca)) as b:
        with Client(b.url, tls=TlsConfig(ca_file=old.ca), reconnect=False) as kept:
            kept.ping()
            install(new, cert, key)
            hup(b)
            assert served(b.url, new.ca)
            assert not served(b.url, old.ca)
            kept.ping()  # the connection made before the reload goes on, unbroken
            assert kept.async_client.connected

        rest = f"https://127.0.0.1:{b.ports['rest_port']}/v1/stats"
        with pytest.raises(httpx.ConnectError):
            httpx.get(rest, verify=ssl.create_default_context(cafile=str(old.ca)), timeout=T)
        verified = ssl.create_default_context(cafile=str(new.ca))
        assert httpx.get(rest, verify=verified, timeout=T).status_code == 200

        credentials = grpc.ssl_channel_credentials(root_certificates=new.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{b.ports['grpc_port']}", credentials) as channel:
            request = pb.GetTaskRequest(id="00000000-0000-0000-0000-000000000000")
            with pytest.raises(grpc.RpcError) as caught:
                TaskQueueStub(channel).GetTask(request, timeout=T)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # served over the new cert


def test_an_unusable_certificate_is_logged_and_the_running_one_kept(tmp_path: Path) -> None:
    certs, other = make_certs(tmp_path / "certs"), make_certs(tmp_path / "other")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    install(certs, cert, key)
    with BrokerProcess(tmp_path / "data", tls=BrokerTls(cert, key, certs.ca)) as b:
        cert.write_bytes(other.cert.read_bytes())  # a new certificate with the old key
        hup(b, "tls.reload_failed")
        assert "key values mismatch" in b.log_tail()
        assert served(b.url, certs.ca)
        assert b.proc is not None and b.proc.poll() is None
