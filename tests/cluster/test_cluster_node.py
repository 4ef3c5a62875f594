"""Three real brokers on a real 3-member etcd cluster (loopback): one leads, the others follow
the log; a follower refuses writes naming the leader and serves reads; status on every door;
a restarted follower resumes from its applied index; the leader's death hands over with every
acknowledged task. (The fault suite with a history checker is test_cluster_faults.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd_procs import EtcdCluster
from tq.client import Client
from tq.errors import ErrorCode, TqError
from tq.protocol import KeySpec
from tq.testing import BrokerProcess, new_api_key

pytestmark = pytest.mark.timeout(150)


def node_settings(etcd: EtcdCluster, node_id: str) -> dict[str, object]:
    return {
        "raft.enabled": True,
        "raft.etcd_endpoints": ",".join(f"http://{e}" for e in etcd.endpoints),
        "raft.node_id": node_id,
        "raft.leader_lease_ttl_s": 2,
        "api.grpc_enabled": False,
    }


@pytest.fixture
def nodes(etcd: EtcdCluster, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    procs = [
        BrokerProcess(tmp_path / f"n{i}", settings=node_settings(etcd, f"n{i}")) for i in range(3)
    ]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def wait_for(what: str, check: object, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
        except TqError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.05)  # polling a condition with a deadline
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def leader_of(nodes: list[BrokerProcess]) -> BrokerProcess:
    def find() -> BrokerProcess | None:
        for n in nodes:
            if n.proc is None or n.proc.poll() is not None:
                continue
            with Client(n.url) as c:
                if c.cluster_status().role == "leader":
                    return n
        return None

    found = wait_for("a leader", find)
    assert isinstance(found, BrokerProcess)
    return found


def test_a_follower_refuses_writes_naming_the_leader_and_serves_reads(
    nodes: list[BrokerProcess],
) -> None:
    leader = leader_of(nodes)
    followers = [n for n in nodes if n is not leader]
    with Client(leader.url) as c:
        ids = [c.submit("job", b"%d" % i) for i in range(50)]
    for f in followers:
        with Client(f.url) as c:
            n = len(ids)
            wait_for("the follower applied every submit", lambda c=c, n=n: c.stats().pending == n)
            assert c.status(ids[-1]).state == "pending"
            status = c.cluster_status()
            assert status.role == "follower" and status.leader_address == f"127.0.0.1:{leader.port}"
            assert status.applied_index == status.log_last_index > 0
        # The follower refuses a write, naming the leader (REST: 503 with the leader's
        # address); a client of this follower follows that leader by itself.
        rest = f"http://127.0.0.1:{f.ports['rest_port']}"
        request = urllib.request.Request(
            f"{rest}/v1/tasks", data=b'{"task_type": "job"}',
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 503
        error = json.load(refused.value)["error"]
        assert error["name"] == "NOT_LEADER", error
        assert error["leader"] == f"127.0.0.1:{leader.port}", error
        with Client(f.url) as c:
            moved = c.submit("job", b"x")
            assert c.url == leader.url
        ids.append(moved)
        with urllib.request.urlopen(f"{rest}/v1/cluster", timeout=5) as r:
            body = json.load(r)
        assert body["enabled"] is True and body["role"] == "follower"
        assert body["leader_id"] == f"n{nodes.index(leader)}"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{f.ports['metrics_port']}/metrics", timeout=5
        ) as r:
            scraped = r.read().decode()
        assert "tq_cluster_leader 0.0" in scraped
    with urllib.request.urlopen(
        f"http://127.0.0.1:{leader.ports['metrics_port']}/metrics", timeout=5
    ) as r:
        scraped = r.read().decode()
    assert "tq_cluster_leader 1.0" in scraped
    assert "tq_cluster_append_duration_seconds_count" in scraped


def test_a_restarted_follower_resumes_from_its_applied_index(
    nodes: list[BrokerProcess],
) -> None:
    leader = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)
    with Client(leader.url) as c:
        first = [c.submit("job", b"a") for _ in range(20)]
    with Client(follower.url) as c:
        wait_for("applied", lambda: c.stats().pending == 20)
    follower.kill()
    with Client(leader.url) as c:
        second = [c.submit("job", b"b") for _ in range(20)]
        c.cancel(first[0])
    follower.start()
    with Client(follower.url) as c:
        wait_for("caught up", lambda: c.stats().pending == 39)
        assert c.status(first[0]).state == "cancelled"
        assert all(c.status(i).state == "pending" for i in second)
    assert "cluster.node_stopped" not in follower.log_tail(200)


def test_the_leaders_death_hands_over_every_acknowledged_task(
    nodes: list[BrokerProcess],
) -> None:
    leader = leader_of(nodes)
    with Client(leader.url) as c:
        acked = [c.submit("job", b"%d" % i) for i in range(100)]
    leader.kill()
    t0 = time.monotonic()
    survivors = [n for n in nodes if n is not leader]
    new = leader_of(survivors)
    took = time.monotonic() - t0
    assert took < 5.0, f"failover took {took:.2f} s"
    with Client(new.url) as c:
        assert c.submit("job", b"after") is not None
        states = [c.status(i).state for i in acked]
    assert states == ["pending"] * 100


def test_a_follower_cut_off_from_etcd_refuses_reads_past_its_staleness_bound(
    nodes: list[BrokerProcess], etcd: EtcdCluster
) -> None:
    leader = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)
    with Client(leader.url) as c:
        task = c.submit("job", b"x")
    # A short deadline: a refused read is sent on to the other nodes (stale too) until then.
    with Client(follower.url, request_timeout=1.0) as c:
        wait_for("the follower serves the read", lambda: c.status(task).state == "pending")
        for i in range(3):
            etcd.kill(i)
        started = time.monotonic()

        def refused() -> TqError | None:
            try:
                c.status(task)
            except TqError as e:
                return e
            return None

        error = wait_for("reads refused", refused, timeout=10.0)
        assert isinstance(error, TqError) and error.code == ErrorCode.NOT_LEADER, error
        assert "may be stale" in error.message, error.message
        # Refused after the bound (TTL 2 s), not before; the cluster itself still answers.
        assert time.monotonic() - started >= 1.5
        assert c.cluster_status().role == "follower"


def test_keys_replicate_and_a_revocation_on_the_leader_ends_a_followers_connections(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    admin = new_api_key()
    procs = [
        BrokerProcess(tmp_path / f"n{i}", settings=node_settings(etcd, f"n{i}"), api_key=admin)
        for i in range(3)
    ]
    try:
        for p in procs:
            p.start()
        leader = leader_of_with(procs, admin)
        follower = next(p for p in procs if p is not leader)
        with Client(leader.url, api_key=admin) as c:
            info, secret = c.create_key(KeySpec(name="reader", permissions=["read"]))
        with Client(follower.url, api_key=secret) as reader:
            wait_for("the key reached the follower", lambda: reader.stats() is not None)
            with Client(leader.url, api_key=admin) as c:
                c.revoke_key(info.id)

            def refused() -> TqError | None:
                try:
                    reader.stats()
                except TqError as e:
                    return e
                return None

            error = wait_for("the follower refuses the revoked key", refused)
            assert isinstance(error, TqError) and error.code == ErrorCode.UNAUTHENTICATED
            assert "revoked" in error.message, error.message
    finally:
        for p in procs:
            p.stop()


def leader_of_with(nodes: list[BrokerProcess], api_key: str) -> BrokerProcess:
    def find() -> BrokerProcess | None:
        for n in nodes:
            with Client(n.url, api_key=api_key) as c:
                if c.cluster_status().role == "leader" and c.list_keys():
                    return n
        return None

    found = wait_for("a leader that created the bootstrap key", find)
    assert isinstance(found, BrokerProcess)
    return found


def test_a_follower_behind_the_trimmed_log_installs_a_checkpoint_and_catches_up(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    settings = {"raft.log_trim_interval_s": 0.5}
    procs = [
        BrokerProcess(tmp_path / f"n{i}", settings={**node_settings(etcd, f"n{i}"), **settings})
        for i in range(3)
    ]
    try:
        for p in procs:
            p.start()
        leader = leader_of(procs)
        behind = next(p for p in procs if p is not leader)
        with Client(leader.url) as c:
            first = c.submit("job", b"before")
        with Client(behind.url) as c:
            wait_for("applied", lambda: c.stats().pending == 1)
        behind.kill()
        # More entries than the trim keeps (1,000), each submit its own entry.
        with Client(leader.url) as c:
            ids = [c.submit("job", b"%d" % i) for i in range(1300)]
            c.cancel(first)
            wait_for(
                "the log trimmed past the stopped node",
                lambda: c.cluster_status().log_first_index > 300,
                30.0,
            )
        behind.start()
        with Client(behind.url) as c:
            wait_for("caught up from a checkpoint", lambda: c.stats().pending == 1300, 60.0)
            assert c.status(first).state == "cancelled"
            assert c.status(ids[-1]).state == "pending"
            wait_for(
                "every node in the status",
                lambda: {n.node_id for n in c.cluster_status().nodes} == {"n0", "n1", "n2"},
            )
        wait_for(  # logged through a buffered stream: it may come a little later
            "the install logged", lambda: "cluster.checkpoint_installed" in behind.log_tail(400)
        )
        with Client(leader.url) as c:
            c.submit("job", b"after")
        with Client(behind.url) as c:
            wait_for("it follows the log again", lambda: c.stats().pending == 1301)
    finally:
        for p in procs:
            p.stop()


def test_a_backup_restores_a_whole_cluster_on_a_fresh_etcd(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    """docs/cluster.md, Backup and restore: a checkpoint fetched from a node's HTTP door,
    extracted into one node's store, restores a cluster on an etcd that holds nothing."""
    procs = [BrokerProcess(tmp_path / f"a{i}", settings=node_settings(etcd, f"n{i}"))
             for i in range(3)]  # fmt: skip
    try:
        for p in procs:
            p.start()
        leader = leader_of(procs)
        with Client(leader.url) as c:
            ids = [c.submit("job", b"%d" % i) for i in range(40)]
            c.cancel(ids[0])
        rest = f"http://127.0.0.1:{leader.ports['rest_port']}"
        backup = tmp_path / "backup.tar"
        with urllib.request.urlopen(f"{rest}/v1/cluster/checkpoint", timeout=30) as r:
            backup.write_bytes(r.read())
    finally:
        for p in procs:
            p.stop()
    fresh = EtcdCluster(tmp_path / "etcd2").start()
    try:
        store = tmp_path / "b0" / "store"
        store.mkdir(parents=True)
        with tarfile.open(backup) as tar:
            files = [m for m in tar.getmembers() if m.name != "MANIFEST.json"]
            tar.extractall(store, members=files, filter="data")
        restored = [
            BrokerProcess(tmp_path / f"b{i}", settings=node_settings(fresh, f"n{i}"))
            for i in range(3)
        ]
        try:
            restored[0].start()
            leader_of(restored[:1])
            for p in restored[1:]:
                p.start()
            for p in restored:
                with Client(p.url) as c:
                    wait_for(f"{p.url} restored", lambda c=c: c.stats().pending == 39, 60.0)
                    assert c.status(ids[0]).state == "cancelled"
            with Client(restored[0].url) as c:
                c.submit("job", b"after")
            for p in restored:
                with Client(p.url) as c:
                    wait_for("the new log applied", lambda c=c: c.stats().pending == 40)
        finally:
            for p in restored:
                p.stop()
    finally:
        fresh.stop()


def test_a_tq_worker_and_a_client_given_every_node_carry_on_through_a_leader_kill(
    nodes: list[BrokerProcess], tmp_path: Path
) -> None:
    """Real processes, no restart: a `tq worker` and a client given all three URLs; the
    leader is killed with -9; tasks submitted before and after all complete."""
    urls = ",".join(n.url for n in nodes)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tq", "--url", urls, "worker", "tq.bench.tasks",
         "--queues", "ha", "--concurrency", "4"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        leader = leader_of(nodes)
        with Client(urls) as c:
            before = [c.submit("tq.bench.noop", b"", queue="ha") for _ in range(20)]
            wait_for("done before", lambda: all(c.status(i).state == "completed" for i in before))
            leader.kill()
            # Submitted through the failover: the client finds the new leader by itself.
            after = [
                c.submit("tq.bench.noop", b"", queue="ha", idempotency_key=f"after-{i}")
                for i in range(20)
            ]
            wait_for(
                "done after the failover",
                lambda: all(c.status(i).state == "completed" for i in after),
                30.0,
            )
        assert worker.poll() is None, "the worker stopped"
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        log.close()
