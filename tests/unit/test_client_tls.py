"""The client's side of TLS (``tq.client.tls``): which context a URL gets, bad files named when
the client is made, and each handshake failure told as one line saying what to do."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from tq.client.tls import TlsConfig, certificate_refused, client_context, handshake_error
from tq.errors import ConfigError

URL = "tqs://broker.example:7420"


def test_a_plaintext_url_has_no_context_and_refuses_tls_settings() -> None:
    assert client_context("tq://h:1", False, None) is None
    with pytest.raises(ConfigError, match="the broker url tq://h:1 is plaintext: use tqs://"):
        client_context("tq://h:1", False, TlsConfig())


def test_tqs_verifies_the_broker_by_default() -> None:
    ctx = client_context(URL, True, None)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_callers_context_is_used_as_it_is() -> None:
    mine = ssl.create_default_context()
    assert client_context(URL, True, mine) is mine


def test_a_client_certificate_is_loaded_with_its_key(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("me@example")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    assert TlsConfig(cert_file=cert, key_file=key).context().verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        TlsConfig(cert_file=cert).context()
    with pytest.raises(ConfigError, match=f"TLS cert_file {cert} with key_file {cert}"):
        TlsConfig(cert_file=cert, key_file=cert).context()


def test_a_ca_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=f"TLS ca_file {bad}: cannot load it"):
        TlsConfig(ca_file=bad).context()


def ssl_error(reason: str) -> ssl.SSLError:
    e = ssl.SSLError(1, f"[SSL: {reason}] ...")
    e.reason = reason
    return e


def test_an_answer_that_is_not_tls_means_a_plaintext_broker() -> None:
    message = handshake_error(URL, ssl_error("WRONG_VERSION_NUMBER")).message
    assert message == (
        f"{URL}: no TLS handshake (wrong version number): this broker serves plaintext: "
        "use tq://broker.example:7420"
    )


def test_an_alert_about_our_certificate_names_the_client_certificate_settings() -> None:
    message = handshake_error(URL, ssl_error("TLSV1_ALERT_UNKNOWN_CA")).message
    assert message.startswith(f"{URL}: the broker refused our TLS client certificate (")
    assert "worker.tls_cert_file" in message
    assert "refused our TLS client certificate" in certificate_refused(URL, None).message


def test_any_other_failure_is_named_as_it_is() -> None:
    message = handshake_error(URL, ssl_error("NO_SHARED_CIPHER")).message
    assert message == f"{URL}: the TLS handshake failed (no shared cipher)"
