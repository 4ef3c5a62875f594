"""Append latency and throughput of tq's replicated log (tq.cluster.log) on a 3-member etcd
cluster on loopback, one append in flight (as the leader runs it), per entry size.

    .venv/bin/python benchmarks/etcd_log_bench.py [--seconds S] [--sizes 1024,16384,65536] [--json]

etcd runs with the tests' settings (tests/cluster/etcd_procs.py: --snapshot-count 5000,
--max-request-bytes 16 MiB, 50/500 ms heartbeat/election). The members share this machine's
cores with the writer, so the figures are pessimistic. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the etcd harness lives with the tests

from tests.cluster.etcd_procs import EtcdCluster  # noqa: E402

from tq.cluster.election import Election  # noqa: E402
from tq.cluster.etcd import Etcd  # noqa: E402
from tq.cluster.log import ReplicatedLog  # noqa: E402


def percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


async def measure(endpoints: list[str], size: int, seconds: float) -> dict[str, float]:
    etcd = Etcd(endpoints, timeout_s=5.0)
    cluster = f"bench{size}"
    election = Election(etcd, cluster, "bench", "bench:1", ttl_s=5)
    epoch = await election.campaign(timeout_s=30)
    log = ReplicatedLog(etcd, cluster, max_entry_bytes=max(size, 1 << 20))
    entry = os.urandom(size)
    for _ in range(20):  # warm up the channel and etcd
        await log.append(entry, epoch=epoch)
    latencies: list[float] = []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        await log.append(entry, epoch=epoch)
        latencies.append((time.perf_counter() - now) * 1000)
    elapsed = time.perf_counter() - start
    await election.resign()
    await etcd.close()
    latencies.sort()
    return {
        "entry_bytes": size,
        "appends": len(latencies),
        "appends_per_s": len(latencies) / elapsed,
        "mb_per_s": len(latencies) * size / elapsed / 1e6,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per entry size")
    parser.add_argument("--sizes", default="1024,16384,65536", help="entry sizes in bytes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    binary = shutil.which("etcd")
    if binary is None:
        sys.exit("etcd not installed (make test installs it: scripts/install-test-deps)")
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="tq-etcd-bench-") as tmp:
        cluster = EtcdCluster(Path(tmp), binary=binary).start()
        try:
            rows = [asyncio.run(measure(cluster.endpoints, s, args.seconds)) for s in sizes]
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("entry     appends/s   MB/s   p50 ms   p99 ms   max ms  (3 etcd members, 1 in flight)")
    for r in rows:
        print(
            f"{r['entry_bytes'] // 1024:>4} KiB  {r['appends_per_s']:>9.0f}  {r['mb_per_s']:>5.1f}"
            f"  {r['p50_ms']:>7.2f}  {r['p99_ms']:>7.2f}  {r['max_ms']:>7.2f}"
        )


if __name__ == "__main__":
    main()
