"""SIGKILL a process that group-commits state-machine batches to RocksDB; rebuild; compare.

The child's command stream is a pure function of a seed, so the parent can replay it on a
fresh machine: the state recovered from disk must equal the replayed state after the last
batch that reached the disk, and that batch is never older than the last acknowledged one.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.crash_child import BATCH_KEY, apply_batch, batch_commands
from tq.core.effects import Effects
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.storage import open_store
from tq.storage.recovery import recover

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


def run_until_killed(data_dir: Path, seed: int, rng: random.Random) -> int:
    """Start the child, let it acknowledge some batches, SIGKILL it; the last ack seen."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    last_ack = -1
    kill_at = time.monotonic() + rng.uniform(0.3, 1.5)
    deadline = time.monotonic() + 60
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while time.monotonic() < deadline:
            if last_ack >= 0 and time.monotonic() >= kill_at:
                break
            for _ in sel.select(timeout=0.05):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"child exited early: {err}")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    last_ack = int(line.split()[1])
        else:
            pytest.fail("child produced no acknowledgement in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        sel.close()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    return last_ack


@pytest.mark.timeout(240)
def test_state_rebuilt_after_sigkill_equals_the_state_of_the_last_durable_batch(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    replica = Machine()
    replayed = 0
    for _round in range(4):
        last_ack = run_until_killed(tmp_path, seed, rng)
        with open_store(tmp_path) as store:
            raw = store.get(Family.METADATA, BATCH_KEY)
            assert raw is not None
            on_disk = int(raw)
            assert on_disk >= last_ack, f"seed {seed}: batch {last_ack} was acked but is lost"
            recovered = recover(store, 0.0)
        while replayed < on_disk:
            replayed += 1
            apply_batch(replica, batch_commands(seed, replayed, replica), Effects())
        assert recovered.repairs.mutations == []
        assert recovered.machine.snapshot() == replica.snapshot(), f"seed {seed}"
    assert replayed > 4
    assert sum(replica.counts().values()) > 0, "the scenario should leave live tasks behind"
