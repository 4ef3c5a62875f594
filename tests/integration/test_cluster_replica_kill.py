"""A replica process killed with SIGKILL while it applies the log: on restart it resumes right
after the last entry its store holds (no entry applied twice, none skipped) and, once it has
applied the rest, holds exactly the leader's state."""

from __future__ import annotations

import random
import time
from pathlib import Path

import msgspec

from tests.integration.test_storage_crash import DEADLINE_S, Child
from tests.replication import Op, follow, lead, same_as_leader
from tq.storage.rocksdb import RocksStore

#: Applies the log in file argv[2] into the store in argv[1], saying where it resumed and each
#: entry it applied, then waits on stdin for the parent's SIGKILL. Past entry argv[3] it goes
#: slowly (a millisecond per entry), so that the kill the parent sends on hearing of that
#: entry lands while it is still applying, even on a loaded machine.
CHILD = """
import sys
import time
import msgspec
from tq.cluster.replica import Replica
from tq.storage.rocksdb import RocksStore
entries = msgspec.msgpack.decode(open(sys.argv[2], "rb").read(), type=list[bytes])
slow_after = int(sys.argv[3])
replica = Replica.open(RocksStore(sys.argv[1]))
print("from", replica.applied_index, flush=True)
for i, data in enumerate(entries, 1):
    if replica.apply_entry(i, data) is not None:
        print("applied", i, flush=True)
    if i > slow_after:
        time.sleep(0.001)
print("done", flush=True)
sys.stdin.read()
"""

#: A long log: each "turn" ends a batch, so every few steps make one entry.
STEPS: list[Op] = [
    ("register", 0, 0), ("submit", 4, 0), ("turn", 0, 0), ("claim", 3, 0), ("turn", 0, 0),
    ("complete", 1, 0), ("fail", 0, 1), ("turn", 0, 0), ("heartbeat", 0, 0), ("submit", 2, 3),
    ("turn", 0, 0), ("expire", 0, 0), ("promote", 1, 0), ("turn", 0, 0),
] * 25  # fmt: skip


def test_a_replica_killed_mid_log_resumes_from_its_applied_index(tmp_path: Path) -> None:
    led = lead(tmp_path / "leader", STEPS)
    total = len(led.entries)
    assert total > 100
    log = tmp_path / "log.msgpack"
    log.write_bytes(msgspec.msgpack.encode(led.entries))
    replica_dir = tmp_path / "replica"
    rng = random.Random(11)
    seen = 0  # the last entry a killed child said it applied
    resumes: list[int] = []
    for _ in range(4):
        target = rng.randint(seen, total)
        child = Child(CHILD, str(replica_dir), str(log), str(target))
        try:
            deadline = time.monotonic() + DEADLINE_S
            start = child.next_line(deadline)
            assert start is not None
            resumed = int(start.split()[1])
            resumes.append(resumed)
            # A process crash loses nothing written (it is in the OS), and it never goes back.
            assert seen <= resumed <= total
            target = max(target, resumed)
            expected = resumed + 1
            while (line := child.next_line(deadline)) is not None:
                if line == "done":
                    break
                index = int(line.split()[1])
                assert index == expected  # resumes right after its mark: no repeat, no gap
                expected += 1
                seen = index
                if index >= target:
                    break
            rest = child.kill_and_drain()
            seen = max([seen, *(int(x.split()[1]) for x in rest if x.startswith("applied"))])
        finally:
            child.stop()
    assert any(0 < r < total for r in resumes), f"no kill landed mid-log: {resumes}"
    _, applied = follow(replica_dir, led.entries)
    assert applied == total
    with RocksStore(replica_dir) as store:
        same_as_leader(store, led)
