"""TLS on vs off in one run: the ``tq bench`` enqueue and drain scenarios against a plaintext
broker and against a broker serving TLS on every door (certificates made here with trustme),
alternating (and which goes first) so that both see the same machine. Not a test: nothing
here asserts a number.

    .venv/bin/python benchmarks/tls_bench.py [--tasks N] [--rounds N] [--json]

Each figure is the best of ``--rounds`` (the machine is shared; the best run is the least
disturbed): the highest throughput, the lowest CPU per task. "on/off" is TLS's figure over
plaintext's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import trustme

from tq.bench.config import BenchConfig
from tq.bench.runner import run_bench

#: (scenario, figure, higher is better): throughputs in tasks/s, and CPU microseconds per
#: task (less disturbed by a shared machine than a throughput: read them side by side).
FIGURES = (
    ("enqueue", "single_per_s", True),
    ("enqueue", "batch_per_s", True),
    ("drain", "steady_per_s", True),
    ("enqueue", "single_broker_cpu_us_per_task", False),
    ("enqueue", "batch_broker_cpu_us_per_task", False),
    ("drain", "broker_cpu_us_per_task", False),
    ("drain", "worker_cpu_us_per_task", False),
)


def tls_settings(directory: Path) -> tuple[tuple[str, str], ...]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    return (
        ("auth.tls_cert_file", str(files["cert"])),
        ("auth.tls_key_file", str(files["key"])),
        ("worker.tls_ca_file", str(files["ca"])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    errors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tq-tls-bench-") as tmp:
        modes = {"off": (), "on": tls_settings(Path(tmp))}
        for round_ in range(args.rounds):
            # Alternate which goes first, so neither always runs on a machine the other warmed.
            order = list(modes.items())[:: 1 if round_ % 2 == 0 else -1]
            for mode, sets in order:
                cfg = BenchConfig(
                    scenarios=("enqueue", "drain"), tasks=args.tasks, broker_settings=sets
                )
                result = run_bench(cfg)
                errors.update({f"{mode}.{k}": v for k, v in result["errors"].items()})
                for scenario, figure, higher in FIGURES:
                    value = result["scenarios"].get(scenario, {}).get(figure)
                    if isinstance(value, int | float):
                        key = f"{scenario}.{figure}"
                        pick = max if higher else min
                        seen = best[mode].get(key)
                        best[mode][key] = float(value) if seen is None else pick(seen, value)
    ratios = {
        key: round(best["on"][key] / off, 3)
        for key, off in best["off"].items()
        if off and key in best["on"]
    }
    if args.json:
        print(json.dumps({"tasks": args.tasks, "best": best, "on_over_off": ratios,
                          "errors": errors}, indent=2))  # fmt: skip
        return
    print(f"tasks={args.tasks} rounds={args.rounds} (best of rounds: tasks/s, CPU us/task)")
    print(f"{'figure':42} {'TLS off':>10} {'TLS on':>10} {'on/off':>8}")
    for key, off in best["off"].items():
        on = best["on"].get(key)
        share = f"{ratios[key]:.1%}" if key in ratios else "-"
        print(f"{key:42} {off:>10,.1f} {on or 0:>10,.1f} {share:>8}")
    for key, error in errors.items():
        print(f"error {key}: {error}")


if __name__ == "__main__":
    main()
