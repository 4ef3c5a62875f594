"""End-to-end figures through real processes, now measured by ``tq bench`` (src/tq/bench).

Kept so that earlier commands still work: it runs the enqueue, drain and latency scenarios
and prints them under this script's former flat keys.

    .venv/bin/python benchmarks/e2e_bench.py [--tasks 100000] [--workers 2] [--json]

``tq bench --scenario enqueue,drain,latency --json`` gives every figure. Not a test.
"""

from __future__ import annotations

import argparse
import json

from tq.bench.config import BenchConfig
from tq.bench.runner import run_bench


def flat(result: dict[str, object]) -> dict[str, object]:
    """The former keys: ``enqueue_single_tasks_per_s`` ... ``submit_p99_ms``."""
    s = result["scenarios"]
    assert isinstance(s, dict)
    enqueue, drain, latency = s.get("enqueue", {}), s.get("drain", {}), s.get("latency", {})
    return {
        "enqueue_single_tasks_per_s": enqueue.get("single_per_s"),
        "enqueue_batch500_tasks_per_s": enqueue.get("batch_per_s"),
        "drain_tasks_per_s_steady": drain.get("steady_per_s"),
        "drain_tasks_per_s_incl_startup": drain.get("per_s_incl_startup"),
        "drained_tasks": drain.get("completed"),
        "e2e_p50_ms": latency.get("e2e_p50_ms"),
        "e2e_p99_ms": latency.get("e2e_p99_ms"),
        "submit_p50_ms": latency.get("submit_p50_ms"),
        "submit_p99_ms": latency.get("submit_p99_ms"),
        "errors": result["errors"] or None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000, help="per enqueue phase, and drained")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-count", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = BenchConfig(
        scenarios=("enqueue", "drain", "latency"),
        tasks=args.tasks,
        workers=args.workers,
        concurrency=args.concurrency,
        latency_count=args.latency_count,
        batch=500,
    )
    results = flat(run_bench(cfg))
    if args.json:
        print(json.dumps(results))
        return
    for k, v in results.items():
        print(f"{k:<36} {v:>14,.2f}" if isinstance(v, int | float) else f"{k:<36} {v}")


if __name__ == "__main__":
    main()
