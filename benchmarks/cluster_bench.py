"""A 3-node cluster against a single broker on the same machine, in one run: the ``tq bench``
enqueue (pipelined single submits, batches), latency (sequential submit -> result with
workers running: its submit figures are one producer submitting one task at a time) and drain
scenarios, each on a fresh single broker and on a fresh cluster of 3 brokers over 3 etcd
members (Debian ``etcd-server``; ``make test`` installs it), all on loopback. The cluster
figures are measured against its leader; the leader's log appends (etcd commit latency and
commands per entry) are read from its metrics. Not a test: nothing here asserts a number.

    .venv/bin/python benchmarks/cluster_bench.py [--tasks N] [--rounds N] [--json]

The etcd members run with the flags tq's docs give (``--snapshot-count 5000``,
``--max-request-bytes 32 MiB``) and short Raft timeouts (heartbeat 50 ms, election 500 ms);
each fsyncs its own WAL on the same disk as the brokers. Each figure is the best of
``--rounds`` (the machine is shared: the best run is the least disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.cluster.etcd_procs

from tests.cluster.etcd_procs import EtcdCluster

from tq.bench import drain, enqueue, latency
from tq.bench.config import BenchConfig
from tq.bench.measure import Meter
from tq.bench.procs import Target, broker_settings, fresh_broker
from tq.client import Client
from tq.eventloop import loop_factory
from tq.testing import BrokerProcess

SCENARIOS = {"enqueue": enqueue.run, "latency": latency.run, "drain": drain.run}
#: (scenario, figure, higher is better)
FIGURES = (
    ("enqueue", "single_per_s", True),
    ("enqueue", "batch_per_s", True),
    ("drain", "steady_per_s", True),
    ("latency", "e2e_p50_ms", False),
    ("latency", "e2e_p99_ms", False),
    ("latency", "submit_p50_ms", False),
    ("latency", "submit_p99_ms", False),
    ("cluster", "append_mean_ms", False),
    ("cluster", "commands_per_entry", True),
)


@contextmanager
def fresh_cluster(cfg: BenchConfig, workdir: Path, name: str) -> Iterator[Target]:
    """3 etcd members and 3 brokers; the target is the leader."""
    base = workdir / name
    with ExitStack() as stack:
        etcd = EtcdCluster(base / "etcd").start()
        stack.callback(etcd.stop)
        endpoints = ",".join(f"http://{e}" for e in etcd.endpoints)
        brokers = []
        for i in range(3):
            settings = {
                **broker_settings(cfg),
                "raft.enabled": "true",
                "raft.etcd_endpoints": endpoints,
                "raft.node_id": f"n{i}",
            }
            b = BrokerProcess(base / f"n{i}", settings=settings, log_file=base / f"n{i}.log")
            b.start()
            stack.callback(b.stop)
            brokers.append(b)
        leader = wait_for_leader(brokers)
        yield Target(leader.url, leader, base)


def wait_for_leader(brokers: list[BrokerProcess], timeout: float = 30.0) -> BrokerProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in brokers:
            with Client(b.url) as c:
                if c.cluster_status().role == "leader":
                    return b
        time.sleep(0.1)  # polling a condition with a deadline
    raise TimeoutError("no leader elected")


def append_figures(target: Target) -> dict[str, float]:
    """Mean etcd append latency and commands per entry, from the leader's metrics."""
    assert target.broker is not None
    port = target.broker.ports["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()

    def value(name: str) -> float:
        found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    n = value("tq_cluster_append_duration_seconds_count")
    if not n:
        return {}
    return {
        "append_mean_ms": round(value("tq_cluster_append_duration_seconds_sum") / n * 1e3, 3),
        "commands_per_entry": round(value("tq_cluster_append_commands_sum") / n, 1),
        "entries": n,
    }


def run_mode(mode: str, scenario: str, cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    fresh = fresh_cluster if mode == "cluster" else None
    meter = Meter()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if fresh is None:
            with fresh_broker(broker_settings(cfg), workdir, f"{mode}-{scenario}") as target:
                return {scenario: runner.run(SCENARIOS[scenario](target, cfg, meter))}
        with fresh(cfg, workdir, f"{mode}-{scenario}") as target:
            out = runner.run(SCENARIOS[scenario](target, cfg, meter))
            return {scenario: out, "cluster": append_figures(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--latency-count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cfg = BenchConfig(tasks=args.tasks, latency_count=args.latency_count)
    modes = ("single", "cluster")
    best: dict[str, dict[str, float]] = {m: {} for m in modes}
    with tempfile.TemporaryDirectory(prefix="tq-cluster-bench-") as tmp:
        for round_ in range(args.rounds):
            order = modes if round_ % 2 == 0 else modes[::-1]
            for scenario in SCENARIOS:
                for mode in order:
                    result = run_mode(mode, scenario, cfg, Path(tmp))
                    for group, figure, higher in FIGURES:
                        value = result.get(group, {}).get(figure)
                        if isinstance(value, int | float):
                            key = f"{group}.{figure}"
                            seen = best[mode].get(key)
                            pick = max if higher else min
                            best[mode][key] = float(value) if seen is None else pick(seen, value)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "best": best}, indent=2))
        return
    print(f"tasks={args.tasks} rounds={args.rounds} (best of rounds; tasks/s, ms)")
    print(f"{'figure':32} {'single':>12} {'cluster':>12} {'cluster/single':>15}")
    keys = dict.fromkeys([*best["single"], *best["cluster"]])
    for key in keys:
        s, c = best["single"].get(key), best["cluster"].get(key)
        ratio = f"{c / s:>15.2f}" if s and c else f"{'-':>15}"
        print(f"{key:32} {s or 0:>12,.2f} {c or 0:>12,.2f} {ratio}")


if __name__ == "__main__":
    main()
