"""The broker's TLS context (``tq.broker.tls``) and the exposure rule (``tq.broker.exposure``),
with certificates made by trustme: no sockets."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trustme

from tq.broker.exposure import check_exposure, exposed_doors, is_loopback
from tq.broker.tls import ServerTls
from tq.config import AuthSettings, Settings, load
from tq.errors import ConfigError


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    out = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "c.pem", "key": tmp_path / "k.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(out["cert"]))
    leaf.private_key_pem.write_to_path(str(out["key"]))
    return out


def auth(files: dict[str, Path], **extra: object) -> AuthSettings:
    return AuthSettings.model_validate(
        {"tls_cert_file": files["cert"], "tls_key_file": files["key"], **extra}
    )


def test_no_certificate_means_no_tls() -> None:
    assert ServerTls.from_settings(AuthSettings()) is None


def test_the_context_speaks_tls_1_2_at_least_and_asks_no_client_certificate(
    files: dict[str, Path],
) -> None:
    tls = ServerTls(auth(files))
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.verify_mode == ssl.CERT_NONE
    assert tls.tcp_context is tls.context
    assert tls.client_auth == "none"


def test_a_ca_alone_makes_client_certificates_optional(files: dict[str, Path]) -> None:
    tls = ServerTls(auth(files, tls_ca_file=files["ca"]))
    assert tls.context.verify_mode == ssl.CERT_OPTIONAL
    assert tls.client_auth == "optional"


def test_mutual_tls_requires_them_except_at_the_tcp_doors_handshake(
    files: dict[str, Path],
) -> None:
    tls = ServerTls(auth(files, tls_ca_file=files["ca"], require_client_cert=True))
    assert tls.context.verify_mode == ssl.CERT_REQUIRED
    # The TCP door refuses a connection without one itself, with a NACK that says so.
    assert tls.tcp_context.verify_mode == ssl.CERT_OPTIONAL
    assert tls.client_auth == "required"
    assert tls.pem().client_ca == files["ca"].read_bytes()


def test_a_missing_file_is_one_error_naming_it(files: dict[str, Path], tmp_path: Path) -> None:
    files["key"] = tmp_path / "gone.pem"
    with pytest.raises(ConfigError, match=r"auth.tls_cert_file .* cannot load them: no such file"):
        ServerTls(auth(files))


def test_a_key_of_another_certificate_is_refused(files: dict[str, Path]) -> None:
    files["key"].write_bytes(trustme.CA().issue_cert("x").private_key_pem.bytes())
    with pytest.raises(ConfigError, match="key values mismatch"):
        ServerTls(auth(files))


def test_a_reload_of_unusable_files_keeps_the_running_certificate(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    tls = ServerTls(auth(files))
    assert tls.reload() and tls.generation == 1
    files["key"].write_bytes(b"not a key")
    with caplog.at_level(logging.ERROR):
        assert not tls.reload()
    assert tls.generation == 1
    assert "tls.reload_failed" in caplog.text


# -- exposure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_is_judged_by_every_address_a_host_names(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_only_enabled_task_doors_count() -> None:
    exposed = load(
        env={},
        overrides={
            "api.rest_host": "0.0.0.0",
            "api.rest_enabled": "false",
            "api.websocket_enabled": "false",
            "api.grpc_host": "0.0.0.0",
            "monitoring.prometheus_host": "0.0.0.0",
        },
    )
    assert exposed_doors(exposed) == ["api.grpc_host=0.0.0.0"]
    assert exposed_doors(Settings()) == []


def test_an_exposed_broker_is_refused_unless_insecure_which_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exposed = {"broker.host": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"refusing to listen on broker\.host=0\.0\.0\.0"):
        check_exposure(load(env={}, overrides=exposed))
    with caplog.at_level(logging.WARNING):
        check_exposure(load(env={}, overrides={**exposed, "auth.insecure": "true"}))
    assert "broker.insecure listening=broker.host=0.0.0.0" in caplog.text
