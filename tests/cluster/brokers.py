"""A real tq cluster for fault tests: 3 etcd members and 3 ``tq broker`` processes on loopback
(fixed free ports, so a restarted node keeps its address), with the faults the chaos tests
inject: kill -9, SIGSTOP/SIGCONT, restart of a broker, and (through ``EtcdProxies``) cutting one
broker off from every etcd member. Only processes started here are signalled, by pid."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.cluster.etcd_procs import EtcdCluster, free_ports
from tests.cluster.proxy import EtcdProxies
from tq.client import AsyncClient
from tq.errors import TqError
from tq.testing import BrokerProcess

#: The election's lease: the shortest the settings allow, so failovers are quick.
TTL_S = 2
#: Short task leases, so a task whose claim was lost in a failover is handed out again soon.
BROKER_SETTINGS: dict[str, object] = {
    "raft.enabled": "true",
    "raft.leader_lease_ttl_s": str(TTL_S),
    "raft.etcd_timeout_s": "1",
    "broker.lease_duration_s": "3",
    "broker.lease_check_interval_s": "0.5",
    "broker.heartbeat_interval_s": "1",
    # The leader trims often, so that a node kept down for a burst of entries is trimmed
    # past and installs a checkpoint (over the HTTP door) when it comes back.
    "raft.log_trim_interval_s": "0.5",
    "api.grpc_enabled": "false",
    "api.websocket_enabled": "false",
    "monitoring.prometheus_enabled": "false",
}


class BrokerCluster:
    """``BrokerCluster(tmp_path).start()``; ``close()`` (or ``with``) stops everything.

    With ``proxied``, each broker reaches etcd through proxies of its own (``cut(i)``)."""

    def __init__(self, root: Path, size: int = 3, *, proxied: bool = False) -> None:
        self.root = root
        self.size = size
        self.etcd = EtcdCluster(root / "etcd")
        self.proxies: EtcdProxies | None = None
        self.ports = free_ports(size)
        self.brokers: list[BrokerProcess] = []
        self.paused: set[int] = set()
        self._proxied = proxied

    @property
    def urls(self) -> list[str]:
        return [f"tq://127.0.0.1:{port}" for port in self.ports]

    def _endpoints(self, i: int) -> str:
        if self.proxies is not None:
            return ",".join(self.proxies.endpoints(i))
        return ",".join(f"http://{e}" for e in self.etcd.endpoints)

    def _process(self, i: int) -> BrokerProcess:
        settings = {
            **BROKER_SETTINGS,
            "raft.node_id": f"n{i}",
            "raft.etcd_endpoints": self._endpoints(i),
        }
        return BrokerProcess(
            self.root / f"n{i}", port=self.ports[i], settings=settings,
            log_file=self.root / f"n{i}.log",
        )  # fmt: skip

    def start(self) -> Self:
        self.etcd.start()
        if self._proxied:
            self.proxies = EtcdProxies(self.etcd.endpoints, self.size).start()
        for i in range(self.size):
            self.brokers.append(self._process(i).start())
        return self

    def close(self) -> None:
        for i in sorted(self.paused):
            self.cont(i)
        for broker in self.brokers:
            broker.stop(timeout=10)
        if self.proxies is not None:
            self.proxies.stop()
        self.etcd.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ faults

    def alive(self, i: int) -> bool:
        proc = self.brokers[i].proc
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        """kill -9 broker i."""
        self.brokers[i].kill()

    def stop(self, i: int) -> None:
        """SIGSTOP broker i: it neither runs nor answers, and its sockets stay open."""
        self.brokers[i].signal(signal.SIGSTOP)
        self.paused.add(i)

    def cont(self, i: int) -> None:
        self.brokers[i].signal(signal.SIGCONT)
        self.paused.discard(i)

    def restart(self, i: int) -> None:
        """Start broker i again on its data directory and port (after ``kill``)."""
        assert not self.alive(i), f"broker n{i} is still running"
        self.brokers[i] = self._process(i).start()

    def cut(self, i: int) -> None:
        """Partition broker i from every etcd member (its clients still reach it)."""
        assert self.proxies is not None, "cut needs BrokerCluster(proxied=True)"
        self.proxies.cut(i)

    def heal(self, i: int) -> None:
        assert self.proxies is not None, "heal needs BrokerCluster(proxied=True)"
        self.proxies.heal(i)

    # ------------------------------------------------------------------ who leads

    def leaders(self, among: list[int] | None = None) -> list[int]:
        """The running nodes (of ``among``) that take writes now. Two can, briefly: a leader
        whose lease ran out answers until it notices, though it can no longer append."""
        wanted = among if among is not None else list(range(self.size))
        live = [i for i in wanted if self.alive(i) and i not in self.paused]
        roles = asyncio.run(_probe_all([self.urls[i] for i in live]))
        return [i for i, leads in zip(live, roles, strict=True) if leads]

    def leader(self, among: list[int] | None = None) -> int | None:
        """The one node (of ``among``) that takes writes; None while none or several do."""
        leaders = self.leaders(among)
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(self, timeout_s: float = 15.0, among: list[int] | None = None) -> float:
        """Seconds until some node (of ``among``) accepts writes; fails at the deadline."""
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            if self.leader(among) is not None:
                return time.monotonic() - start
            time.sleep(0.05)  # polling a condition with a deadline
        tails = "\n".join(f"--- n{i}\n{b.log_tail(15)}" for i, b in enumerate(self.brokers))
        raise AssertionError(f"no leader among {among} within {timeout_s}s\n{tails}")

    def log_text(self, i: int) -> str:
        return self.brokers[i].log_path.read_text(errors="replace")

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- n{i}\n{b.log_tail(lines)}" for i, b in enumerate(self.brokers))


async def _probe_all(urls: list[str]) -> list[bool]:
    return list(await asyncio.gather(*(probe_leader(url) for url in urls)))


async def probe_leader(url: str, timeout_s: float = 1.0) -> bool:
    """True if the node at ``url`` leads and takes writes, as it says itself (CLUSTER_STATUS,
    which every node answers from its own state: a write would be sent on to the leader by
    a client that follows it)."""
    client = AsyncClient(
        url, connect_timeout=timeout_s, request_timeout=timeout_s, reconnect=False,
        name="tq-chaos-probe",
    )  # fmt: skip
    try:
        return (await client.cluster_status()).role == "leader"
    except (TqError, OSError):
        return False
    finally:
        await client.close()
