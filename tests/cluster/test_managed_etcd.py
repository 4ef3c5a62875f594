"""raft.manage_local_etcd: each of three brokers starts its own etcd member (at the host of
its address: 127.0.0.1, .2 and .3, all loopback), so a node is one command. The members form
one etcd cluster, a leader is elected, and a node killed with -9 takes its member with it
(the others keep a quorum and elect a new leader); started again, it rejoins with both."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd_procs import free_ports
from tests.cluster.test_cluster_node import leader_of, wait_for
from tq.client import Client
from tq.testing import BrokerProcess

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed"),
]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    ports = free_ports(5)
    broker_ports, client_port, peer_port = ports[:3], ports[3], ports[4]
    hosts = [f"127.0.0.{i + 1}" for i in range(3)]
    members = ",".join(f"n{i}={hosts[i]}:{broker_ports[i]}" for i in range(3))
    procs = []
    for i in range(3):
        b = BrokerProcess(
            tmp_path / f"n{i}",
            port=broker_ports[i],
            settings={
                "raft.enabled": True,
                "raft.manage_local_etcd": True,
                "raft.members": members,
                "raft.node_id": f"n{i}",
                "raft.etcd_client_port": client_port,
                "raft.etcd_peer_port": peer_port,
                "raft.leader_lease_ttl_s": 2,
                "api.grpc_enabled": False,
            },
        )
        b.host = hosts[i]
        procs.append(b)
    try:
        for b in procs:
            b.start()
        yield procs
    finally:
        for b in procs:
            b.stop()


def test_three_brokers_each_with_its_own_etcd_member_form_a_cluster(
    nodes: list[BrokerProcess],
) -> None:
    leader = leader_of(nodes)
    with Client(leader.url) as c:
        ids = [c.submit("job", b"%d" % i) for i in range(30)]
    assert (Path(leader.data_dir) / "etcd" / "member").is_dir()
    leader.kill()  # the broker and, with it, its etcd member
    t0 = time.monotonic()
    survivors = [n for n in nodes if n is not leader]
    new = leader_of(survivors)
    took = time.monotonic() - t0
    with Client(new.url) as c:
        assert [c.status(i).state for i in ids] == ["pending"] * 30
        c.submit("job", b"after")
    leader.start()  # its member restarts from its data dir and rejoins
    with Client(leader.url) as c:
        wait_for("the node rejoined and caught up", lambda: c.stats().pending == 31, 40.0)
    assert took < 8.0, f"failover took {took:.2f} s"
    # No orphaned member: the one killed with its broker was replaced by the new start.
    assert "etcd.exited" not in leader.log_tail(400)
