"""Run a real ``tq broker`` in a child process on a free port, for tests and benchmarks.

The broker writes ``{"host", "port", "pid"}`` to its ``--ready-file`` once it is serving, so
``start()`` waits on that condition (with a deadline), never on a fixed sleep. With
``api_key`` it runs with auth enabled and that secret as its bootstrap admin key.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tq.client.tls import TlsConfig
from tq.core.keys import format_key
from tq.errors import TqError, UnavailableError


def new_api_key() -> str:
    """A fresh, well-formed API key secret (``tq_<id>_<secret>``), e.g. for ``api_key=``."""
    return format_key(secrets.token_bytes(6), secrets.token_bytes(32))


_AUTH_SETTINGS: dict[str, object] = {"auth.enabled": "true"}


@dataclass(frozen=True)
class BrokerTls:
    """A broker's TLS files: its certificate chain and key, the CA that signed them (what
    clients verify the broker against), and for mutual TLS the CA of client certificates."""

    cert_file: str | os.PathLike[str]
    key_file: str | os.PathLike[str]
    ca_file: str | os.PathLike[str] | None = None
    client_ca_file: str | os.PathLike[str] | None = None
    require_client_cert: bool = False

    def settings(self) -> dict[str, object]:
        """The ``auth.*`` settings that make a broker serve these."""
        out: dict[str, object] = {
            "auth.tls_cert_file": os.fspath(self.cert_file),
            "auth.tls_key_file": os.fspath(self.key_file),
        }
        if self.client_ca_file is not None:
            out["auth.tls_ca_file"] = os.fspath(self.client_ca_file)
        if self.require_client_cert:
            out["auth.require_client_cert"] = "true"
        return out


class BrokerProcess:
    """``with BrokerProcess(tmp_path) as b: AsyncClient(b.url)``; SIGTERM on exit.

    With ``tls``, every door serves TLS: ``url`` is ``tqs://`` and ``client_tls()`` is what a
    client needs to verify the broker (and, given a client certificate, to present it)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        settings: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        tls: BrokerTls | None = None,
    ) -> None:
        """``api_key``: run with ``auth.enabled`` and this secret as the bootstrap admin key
        (``new_api_key()`` makes one); every door then checks keys."""
        self.data_dir = Path(data_dir)
        self.port = port
        self.tls = tls
        self.settings = {**(tls.settings() if tls else {}), **(settings or {})}
        self.env = dict(env or {})
        self.api_key = api_key
        self.log_path = Path(log_file) if log_file else self.data_dir.with_suffix(".broker.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        #: Every port the broker listens on, from its ready file: port (TCP), and when
        #: enabled rest_port, grpc_port, metrics_port.
        self.ports: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"{'tqs' if self.tls else 'tq'}://{self.host}:{self.port}"

    def client_tls(
        self,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> TlsConfig | None:
        """What a client passes as ``tls=`` to reach this broker: its CA, and the client
        certificate given here (mutual TLS); None for a plaintext broker."""
        if self.tls is None:
            return None
        return TlsConfig(ca_file=self.tls.ca_file, cert_file=cert_file, key_file=key_file)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the broker (``signal.SIGHUP`` reloads its TLS certificate)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn the broker and return once it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd, ready_name = tempfile.mkstemp(prefix="tq-ready-", suffix=".json")
        os.close(fd)
        ready = Path(ready_name)
        ready.unlink()
        argv = [sys.executable, "-m", "tq"]
        # Management front doors listen on ephemeral ports unless a test asks otherwise, so
        # parallel tests never fight over 8080/50051/9420.
        settings = {
            "api.rest_port": 0,
            "api.grpc_port": 0,
            "monitoring.prometheus_port": 0,
            **(_AUTH_SETTINGS if self.api_key is not None else {}),
            **self.settings,
        }
        for key, value in settings.items():
            argv += ["--set", f"{key}={value}"]
        argv += [
            "broker",
            "--host", self.host,
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--ready-file", str(ready),
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        if self.api_key is not None:
            env["TQ_BOOTSTRAP_API_KEY"] = self.api_key
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists() and ready.stat().st_size > 0:
                info = json.loads(ready.read_text())
                ready.unlink()
                self.port = int(info["port"])
                self.ports = {k: int(v) for k, v in info.items() if k.endswith("port")}
                return self
            if self.proc.poll() is not None:
                raise TqError(f"broker exited with {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.01)  # polling a condition with a deadline
        self.kill()
        raise UnavailableError(f"broker not ready within {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the broker can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
