"""Certificates made in the test with ``trustme``: a CA, a broker certificate for 127.0.0.1,
a client certificate, and a second CA that signed neither (the "wrong CA")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

from tq.testing import BrokerTls


@dataclass(frozen=True)
class Certs:
    ca: Path  #: signed the broker's and the client's certificates
    other_ca: Path  #: signed neither
    cert: Path  #: the broker's certificate chain, for 127.0.0.1 only
    key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  #: a client certificate signed by other_ca
    stranger_key: Path

    def broker(self, *, mtls: bool = False) -> BrokerTls:
        """The broker's TLS; with ``mtls``, client certificates of ``ca`` are required."""
        if mtls:
            return BrokerTls(self.cert, self.key, self.ca, self.ca, require_client_cert=True)
        return BrokerTls(self.cert, self.key, self.ca)


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("worker@tq.test")
    stranger = other.issue_cert("stranger@tq.test")

    def write(name: str, blob: trustme.Blob) -> Path:
        path = directory / name
        blob.write_to_path(str(path))
        return path

    def chain(name: str, leaf: trustme.LeafCert) -> Path:
        path = directory / name
        path.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        return path

    return Certs(
        ca=write("ca.pem", ca.cert_pem),
        other_ca=write("other-ca.pem", other.cert_pem),
        cert=chain("broker.pem", server),
        key=write("broker.key", server.private_key_pem),
        client_cert=chain("client.pem", client),
        client_key=write("client.key", client.private_key_pem),
        stranger_cert=chain("stranger.pem", stranger),
        stranger_key=write("stranger.key", stranger.private_key_pem),
    )
