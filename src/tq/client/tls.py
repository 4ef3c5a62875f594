"""TLS from the client's side: what verifies a ``tqs://`` broker and what identifies us to it,
and failed handshakes told in one line.

A ``tqs://`` broker is always verified, certificate and host name: against the system's CAs,
or ``TlsConfig.ca_file``. ``TlsConfig`` also names a client certificate for brokers that
require one (mutual TLS). A caller who needs more control passes its own ``ssl.SSLContext``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from tq.errors import ConfigError, ProtocolError

Path = str | os.PathLike[str]


@dataclass(frozen=True)
class TlsConfig:
    """``ca_file``: PEM CA bundle the broker's certificate must chain to (None: the system's
    CAs); ``cert_file`` and ``key_file``: our certificate for mutual TLS (both or neither)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The SSLContext these files make; ConfigError naming a file that does not load."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("TLS: cert_file and key_file go together: give both or neither")
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"TLS ca_file {self.ca_file}: cannot load it: {_why(e)}") from e
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(
                    f"TLS cert_file {self.cert_file} with key_file {self.key_file}: cannot load "
                    f"them: {_why(e)}"
                ) from e
        return ctx


TlsOption = TlsConfig | ssl.SSLContext | None


def client_context(url: str, tls: bool, option: TlsOption) -> ssl.SSLContext | None:
    """The context a connection to ``url`` uses: None for plaintext ``tq://``; for ``tqs://``
    ``option`` (a TlsConfig is built now, so a bad file fails when the client is made), else
    the system's CAs. TLS settings with a ``tq://`` URL are a mistake, named here."""
    if not tls:
        if option is not None:
            raise ConfigError(
                f"TLS settings were given but the broker url {url} is plaintext: use tqs://"
            )
        return None
    if isinstance(option, ssl.SSLContext):
        return option
    return (option or TlsConfig()).context()


def handshake_error(url: str, e: ssl.SSLError) -> ProtocolError:
    """A failed TLS handshake (or a TLS alert just after it) as one line saying what to do."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return ProtocolError(
            f"{url}: the broker's TLS certificate was refused ({e.verify_message}): give the CA "
            "that signed it (worker.tls_ca_file, or TlsConfig(ca_file=...)) and connect by a "
            "name the certificate holds"
        )
    reason = (e.reason or type(e).__name__).upper()
    said = reason.lower().replace("_", " ")
    if reason in _CERT_WANTED:
        return ProtocolError(
            f"{url}: the broker refused our TLS client certificate ({said}): it requires one "
            "signed by its auth.tls_ca_file: set worker.tls_cert_file and worker.tls_key_file "
            "(or TlsConfig(cert_file=..., key_file=...))"
        )
    if reason in _NOT_TLS:
        plain = url.replace("tqs://", "tq://", 1)
        return ProtocolError(
            f"{url}: no TLS handshake ({said}): this broker serves plaintext: use {plain}"
        )
    return ProtocolError(f"{url}: the TLS handshake failed ({said})")


def certificate_refused(url: str, exc: Exception | None) -> ProtocolError:
    """The broker closed a TLS connection we showed a client certificate on before it
    answered HELLO: under TLS 1.3 that is how a certificate it does not trust is refused."""
    seen = f" ({exc})" if exc else ""
    return ProtocolError(
        f"{url}: the broker closed the connection after the TLS handshake{seen}: it most likely "
        "refused our TLS client certificate: is it signed by the broker's auth.tls_ca_file "
        "and still valid?"
    )


#: Alerts of a broker that wants a (valid) client certificate.
_CERT_WANTED = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
#: What OpenSSL says when the answer to our ClientHello is not TLS at all.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)


def _why(e: OSError | ssl.SSLError) -> str:
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.lower().replace("_", " ")
    return e.strerror or str(e) or type(e).__name__
