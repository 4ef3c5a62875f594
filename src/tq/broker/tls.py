"""The broker's TLS: one ``ssl.SSLContext`` built from the ``auth.tls_*`` settings, shared by
every door (TCP, REST/WebSocket through uvicorn, metrics; gRPC reads the same files through
``pem()``), and reloaded in place on SIGHUP.

Rules: TLS 1.2 at least. ``require_client_cert``: CERT_REQUIRED against ``tls_ca_file``; a CA
without it: CERT_OPTIONAL (a certificate shown is verified, none is accepted). The TCP door has
a context of its own under ``require_client_cert``: CERT_OPTIONAL, and the door refuses a
connection without a certificate itself, with a NACK saying so (under TLS 1.3 a handshake
refusal reaches the client only as a reset, after it already sent HELLO). A reload first
loads the new files into a scratch context, so a bad file (unreadable, key not matching) is
logged and the running certificate stays; a good one goes into the live context, which every
handshake after it uses, while open connections keep the session they negotiated.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from tq.config import AuthSettings
from tq.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pem:
    """The files' bytes, for servers that take PEM instead of an SSLContext (gRPC)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


class ServerTls:
    """The broker's TLS context and the files it came from; ``generation`` counts reloads."""

    def __init__(self, auth: AuthSettings) -> None:
        if auth.tls_cert_file is None or auth.tls_key_file is None:
            raise ValueError("ServerTls needs auth.tls_cert_file and auth.tls_key_file")
        self.cert_file: Path = auth.tls_cert_file
        self.key_file: Path = auth.tls_key_file
        self.ca_file: Path | None = auth.tls_ca_file
        self.require_client_cert = auth.require_client_cert
        self.context = self._build(self.require_client_cert)
        #: The TCP door's: certificates optional at the handshake, required by the door.
        self.tcp_context = self._build(False) if self.require_client_cert else self.context
        self.generation = 0

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> ServerTls | None:
        """The broker's TLS, or None when no certificate is configured (plaintext doors)."""
        return cls(auth) if auth.tls_enabled else None

    def _build(self, require: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(ctx, self.cert_file, self.key_file)
        if self.ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(
                    f"auth.tls_ca_file {self.ca_file}: cannot load it: {_reason(e)}"
                ) from e
            ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
        return ctx

    @property
    def client_auth(self) -> str:
        """How client certificates are treated, for logs: required, optional or none."""
        if self.ca_file is None:
            return "none"
        return "required" if self.require_client_cert else "optional"

    def pem(self) -> Pem:
        """The current files' bytes (read now: after a reload, the new ones)."""
        try:
            return Pem(
                self.cert_file.read_bytes(),
                self.key_file.read_bytes(),
                None if self.ca_file is None else self.ca_file.read_bytes(),
            )
        except OSError as e:
            raise ConfigError(f"cannot read the TLS files: {_reason(e)}") from e

    def reload(self) -> bool:
        """Load the certificate and key again (SIGHUP); False, logged, when they are unusable:
        the running certificate then stays."""
        try:
            _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.cert_file, self.key_file)
            for ctx in {id(c): c for c in (self.context, self.tcp_context)}.values():
                _load_chain(ctx, self.cert_file, self.key_file)
        except ConfigError as e:
            log.error("tls.reload_failed error=%s: keeping the current certificate", e.message)
            return False
        self.generation += 1
        log.info("tls.reloaded cert=%s generation=%d", self.cert_file, self.generation)
        return True


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"auth.tls_cert_file {cert} with auth.tls_key_file {key}: cannot load them: "
            f"{_reason(e)}"
        ) from e


def _reason(e: OSError | ssl.SSLError) -> str:
    """An ssl or file error in a few words ("no such file", "key values mismatch")."""
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.lower().replace("_", " ")
    if isinstance(e, FileNotFoundError):
        return f"no such file {e.filename}" if e.filename else "no such file"
    return e.strerror or str(e) or type(e).__name__
