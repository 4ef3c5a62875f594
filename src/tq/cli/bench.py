"""``tq bench``: the built-in load generator; the work happens in ``tq.bench``.

By default every scenario gets a fresh fsync-durable broker in a temp dir (global ``--set``
options apply to it, e.g. ``tq bench --set persistence.sync_mode=relaxed``); the global
``--url``, when typed (``$TQ_BROKER_URL`` does not count), runs enqueue, latency and steady
against that broker instead. Exit status 1 when a scenario failed or lost a task.
"""

from __future__ import annotations

import sys

import click

from tq.cli.context import CliContext, emit, out_console, parse_pairs
from tq.cli.extras import require_server

_SCENARIO_HELP = (
    "Comma-separated: enqueue, drain, latency, steady, memory, restart; or all. "
    "With --url only enqueue, latency and steady run."
)


@click.command("bench")
@click.option("--scenario", "scenarios", default="all", show_default=True, help=_SCENARIO_HELP)
@click.option("--tasks", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Tasks per enqueue phase, and drained.")  # fmt: skip
@click.option("--stored", type=click.IntRange(min=1), default=None,
              help="Pending tasks of memory and restart. Default: --tasks.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Tasks each worker runs at once.")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20_000.0,
              show_default=True, help="Offered tasks/s of steady.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds of steady.")  # fmt: skip
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Tasks per submit_many.")  # fmt: skip
@click.option("--window", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Submitted tasks in flight (enqueue, steady).")  # fmt: skip
@click.option("--payload-size", type=click.IntRange(min=0), default=16, show_default=True,
              help="Payload bytes (memory always uses 100).")  # fmt: skip
@click.option("--latency-count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Sequential round trips of latency.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every figure.")
@click.option("--progress/--no-progress", default=None,
              help="Live progress on stderr. Default: when stderr is a terminal.")  # fmt: skip
@click.pass_obj
def bench_cmd(
    ctx: CliContext,
    scenarios: str,
    tasks: int,
    stored: int | None,
    workers: int,
    concurrency: int,
    rate: float,
    duration: float,
    batch: int,
    window: int,
    payload_size: int,
    latency_count: int,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Measure tq: enqueue, drain, latency, steady rate, memory, restart.

    Each scenario runs against a fresh broker of its own, or with --url against that broker
    (enqueue, latency and steady only).
    """
    if ctx.url_flag is None:
        require_server("bench", "starts its own brokers (unless --url)")
    # Imported here: other commands should not pay for the bench's imports.
    from tq.bench.config import BenchConfig, parse_scenarios  # noqa: PLC0415
    from tq.bench.report import render, render_targets  # noqa: PLC0415
    from tq.bench.runner import run_bench  # noqa: PLC0415

    settings = tuple(parse_pairs(ctx.sets, "--set").items())
    cfg = BenchConfig(
        scenarios=parse_scenarios(scenarios), tasks=tasks, stored=stored, workers=workers,
        concurrency=concurrency, rate=rate, duration=duration, batch=batch, window=window,
        payload_size=payload_size, latency_count=latency_count, url=ctx.url_flag,
        broker_settings=settings, api_key=ctx.api_key,
    )  # fmt: skip
    show = sys.stderr.isatty() if progress is None else progress
    result = run_bench(cfg, progress=show)
    if as_json or ctx.output != "table":
        ctx.output = "json" if as_json else ctx.output
        emit(ctx, result)
    else:
        console = out_console()
        console.print(render(result))
        console.print(render_targets(result))
    click.get_current_context().exit(0 if result["ok"] else 1)
