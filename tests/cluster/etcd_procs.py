"""A real etcd cluster for tests: N members on 127.0.0.1 with free ports in a tmp dir, the
settings a tq cluster needs (snapshot count, request size, short timeouts), and faults:
kill -9, restart, SIGSTOP/SIGCONT of one member, finding the Raft leader. Every wait has a
deadline; only the processes started here are signalled, by pid."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.tools import require_tool

T = TypeVar("T")


def run_bounded(main: Coroutine[Any, Any, T], timeout_s: float = 90.0) -> T:
    """``asyncio.run(main)`` that fails (with main's stack cancelled) past ``timeout_s``."""
    return asyncio.run(asyncio.wait_for(main, timeout_s))


#: etcd settings for tests: short Raft timeouts make elections take ~0.5 s instead of ~1 s.
TEST_FLAGS = (
    "--snapshot-count",
    "5000",
    "--max-request-bytes",
    str(32 << 20),
    "--heartbeat-interval",
    "50",
    "--election-timeout",
    "500",
)


def free_ports(count: int) -> list[int]:
    """Ports the kernel had free a moment ago (all held at once, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class EtcdCluster:
    """``size`` etcd members named m0..m<size-1>, data and logs under ``root``."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        flags: tuple[str, ...] = TEST_FLAGS,
        binary: str | None = None,
    ) -> None:
        """``binary``: the etcd executable; None looks it up (skipping the test without it)."""
        self.binary = binary if binary is not None else require_tool("etcd")
        self.root = root
        self.size = size
        self.flags = flags
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        self.peer_ports = ports[size:]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopped: set[int] = set()
        self.token = f"tq-test-{os.getpid()}-{ports[0]}"

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.client_ports]

    def _args(self, i: int) -> list[str]:
        initial = ",".join(f"m{j}=http://127.0.0.1:{self.peer_ports[j]}" for j in range(self.size))
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [
            self.binary,
            "--name", f"m{i}",
            "--data-dir", str(self.root / f"m{i}"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", str(self.root / f"m{i}.log"),
            "--log-level", "warn",
            *self.flags,
        ]  # fmt: skip

    def start_member(self, i: int) -> None:
        assert not self.alive(i), f"member m{i} is already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs[i] = subprocess.Popen(
            self._args(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._stopped.discard(i)

    def start(self, timeout_s: float = 30.0) -> EtcdCluster:
        for i in range(self.size):
            self.start_member(i)
        self.wait_healthy(timeout_s)
        return self

    def alive(self, i: int) -> bool:
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def _get(self, i: int, path: str, body: bytes | None = None) -> dict[str, object] | None:
        url = f"http://127.0.0.1:{self.client_ports[i]}{path}"
        try:
            with urllib.request.urlopen(url, data=body, timeout=1.0) as reply:
                parsed: dict[str, object] = json.loads(reply.read())
                return parsed
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def healthy(self, i: int) -> bool:
        """Member i answers /health with a leader elected (it can serve linearizable reads)."""
        got = self._get(i, "/health")
        return got is not None and got.get("health") == "true"

    def wait_healthy(self, timeout_s: float = 30.0, members: list[int] | None = None) -> float:
        """Seconds until every running member (or ``members``) is healthy; fails at the deadline."""
        start = time.monotonic()
        deadline = start + timeout_s
        wanted = members if members is not None else [i for i in self.procs if self.alive(i)]
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in wanted):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"etcd members {wanted} not healthy within {timeout_s}s: {self.root}")

    def raft_leader(self, timeout_s: float = 10.0) -> int:
        """The member that is the Raft leader, asked of the running members until the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in self.procs:
                if not self.alive(i) or i in self._stopped:
                    continue
                status = self._get(i, "/v3/maintenance/status", b"{}")
                if status is None:
                    continue
                header = status.get("header")
                leader = status.get("leader")
                if isinstance(header, dict) and leader and header.get("member_id") == leader:
                    return i
            time.sleep(0.05)
        raise AssertionError(f"no etcd Raft leader within {timeout_s}s")

    def kill(self, i: int) -> None:
        """kill -9 member i and reap it."""
        proc = self.procs[i]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self, i: int) -> None:
        """Start member i again on its data dir (after kill)."""
        self.start_member(i)

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)
        self._stopped.add(i)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)
        self._stopped.discard(i)

    def stop(self) -> None:
        """Kill every member (-9: their data is thrown away, and etcd's graceful stop takes
        about 6 s, most of a short test's time)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self._stopped.clear()
