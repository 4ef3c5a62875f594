"""Security on vs off in one run: the ``tq bench`` enqueue and drain scenarios against a
plaintext broker without keys (``off``), one serving TLS on every door (``tls``, certificates
made here with trustme), one requiring API keys (``auth``: clients and workers present a key),
and one with both (``tls+auth``), rotating which goes first so that all see the same machine.
Not a test: nothing here asserts a number.

    .venv/bin/python benchmarks/security_bench.py [--tasks N] [--rounds N] [--json] \
        [--modes off,tls,auth,tls+auth]

Each figure is the best of ``--rounds`` (the machine is shared; the best run is the least
disturbed): the highest throughput, the lowest CPU per task. Each mode's column after the
first is also shown as a share of ``off``'s figure.
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
from tq.testing import new_api_key

MODES = ("off", "tls", "auth", "tls+auth")

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


def mode_config(mode: str, tls: tuple[tuple[str, str], ...], tasks: int) -> BenchConfig:
    """The bench of one mode: TLS files in the broker settings, and/or auth with a fresh key
    (the spawned broker's bootstrap admin key, presented by the bench's clients and workers)."""
    sets = tls if "tls" in mode else ()
    key = None
    if "auth" in mode:
        sets = (*sets, ("auth.enabled", "true"))
        key = new_api_key()
    return BenchConfig(
        scenarios=("enqueue", "drain"), tasks=tasks, broker_settings=sets, api_key=key
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes: {', '.join(unknown) or 'none given'}; choose from {MODES}")
    best: dict[str, dict[str, float]] = {m: {} for m in modes}
    errors: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tq-security-bench-") as tmp:
        tls = tls_settings(Path(tmp))
        for round_ in range(args.rounds):
            # Rotate which goes first, so no mode always runs on a machine another warmed.
            order = modes[round_ % len(modes) :] + modes[: round_ % len(modes)]
            for mode in order:
                result = run_bench(mode_config(mode, tls, args.tasks))
                errors.update({f"{mode}.{k}": v for k, v in result["errors"].items()})
                for scenario, figure, higher in FIGURES:
                    value = result["scenarios"].get(scenario, {}).get(figure)
                    if isinstance(value, int | float):
                        key = f"{scenario}.{figure}"
                        pick = max if higher else min
                        seen = best[mode].get(key)
                        best[mode][key] = float(value) if seen is None else pick(seen, value)
    base = modes[0]
    ratios = {
        mode: {k: round(v / best[base][k], 3) for k, v in best[mode].items() if best[base].get(k)}
        for mode in modes[1:]
    }
    if args.json:
        print(json.dumps({"tasks": args.tasks, "best": best, f"over_{base}": ratios,
                          "errors": errors}, indent=2))  # fmt: skip
        return
    print(f"tasks={args.tasks} rounds={args.rounds} (best of rounds: tasks/s, CPU us/task)")
    print(f"{'figure':40}" + "".join(f" {m:>10}" for m in modes) + "".join(
        f" {m + '/' + base:>14}" for m in modes[1:]))  # fmt: skip
    for key in best[base]:
        row = "".join(f" {best[m].get(key, 0):>10,.1f}" for m in modes)
        shares = "".join(
            f" {ratios[m][key]:>14.1%}" if key in ratios[m] else f" {'-':>14}" for m in modes[1:]
        )
        print(f"{key:40}{row}{shares}")
    for key, error in errors.items():
        print(f"error {key}: {error}")


if __name__ == "__main__":
    main()
