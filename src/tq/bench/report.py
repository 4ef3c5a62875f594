"""The shape of a ``tq bench`` result: its JSON document, tq's performance targets checked
against it, and the rich tables printed at the end.

Everything here is pure (data in, data or renderables out), so the formatting is tested
without running a benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from rich.table import Table

SCHEMA: Final = "tq-bench/1"


class Figure(NamedTuple):
    key: str
    label: str
    unit: str  # rate, ms, s, us, mib, bytes, pct, count, bool


#: The figures of each scenario shown in the table (the JSON holds more).
FIGURES: Final[dict[str, tuple[Figure, ...]]] = {
    "enqueue": (
        Figure("single_per_s", "pipelined single submits", "rate"),
        Figure("single_submit_p50_ms", "single submit ack p50", "ms"),
        Figure("single_submit_p99_ms", "single submit ack p99", "ms"),
        Figure("single_client_cpu_us_per_task", "client CPU per single submit", "us"),
        Figure("nowait_per_s", "pipelined submit_nowait", "rate"),
        Figure("nowait_submit_p50_ms", "submit_nowait ack p50", "ms"),
        Figure("nowait_submit_p99_ms", "submit_nowait ack p99", "ms"),
        Figure("nowait_client_cpu_us_per_task", "client CPU per submit_nowait", "us"),
        Figure("batch_per_s", "batch submits", "rate"),
        Figure("batch_call_p50_ms", "batch call p50", "ms"),
        Figure("batch_call_p99_ms", "batch call p99", "ms"),
        Figure("lost", "lost", "count"),
    ),
    "drain": (
        Figure("steady_per_s", "drain, steady", "rate"),
        Figure("per_s_incl_startup", "drain, incl. start-up", "rate"),
        Figure("startup_s", "worker start-up", "s"),
        Figure("worker_cpu_us_per_task", "worker CPU per task", "us"),
        Figure("broker_cpu_us_per_task", "broker CPU per task", "us"),
        Figure("broker_peak_rss_mib", "broker peak RSS", "mib"),
        Figure("workers_peak_rss_mib", "workers peak RSS (sum)", "mib"),
        Figure("completed", "completed", "count"),
        Figure("lost", "lost", "count"),
    ),
    "latency": (
        Figure("e2e_p50_ms", "submit->result p50", "ms"),
        Figure("e2e_p90_ms", "submit->result p90", "ms"),
        Figure("e2e_p99_ms", "submit->result p99", "ms"),
        Figure("submit_p50_ms", "submit ack p50", "ms"),
        Figure("submit_p99_ms", "submit ack p99", "ms"),
        Figure("e2e_count", "round trips", "count"),
        Figure("failed", "failed", "count"),
    ),
    "steady": (
        Figure("offered_per_s", "offered", "rate"),
        Figure("achieved_per_s", "achieved (sent)", "rate"),
        Figure("submit_p50_ms", "submit ack p50", "ms"),
        Figure("submit_p99_ms", "submit ack p99", "ms"),
        Figure("complete_p50_ms", "submit->complete p50", "ms"),
        Figure("complete_p99_ms", "submit->complete p99", "ms"),
        Figure("send_lag_p99_ms", "send lag behind schedule p99", "ms"),
        Figure("broker_cpu_percent", "broker CPU", "pct"),
        Figure("client_cpu_percent", "bench client CPU", "pct"),
        Figure("completed", "completed (broker count)", "count"),
        Figure("unfinished", "not completed by the end", "count"),
        Figure("unobserved", "completions not observed (events dropped)", "count"),
    ),
    "memory": (
        Figure("tasks", "pending tasks (100-byte payloads)", "count"),
        Figure("rss_bytes_per_task", "broker RSS per pending task", "bytes"),
        Figure("rss_after_mib", "broker RSS", "mib"),
        Figure("rss_projected_1m_mib", "broker RSS projected to 1M", "mib"),
        Figure("data_dir_mib", "data dir on disk", "mib"),
        Figure("lost", "lost", "count"),
    ),
    "restart": (
        Figure("tasks", "stored tasks", "count"),
        Figure("restart_to_ping_s", "SIGKILL restart to first pong", "s"),
        Figure("empty_start_to_ping_s", "empty data dir start to first pong", "s"),
        Figure("recovered", "recovered", "count"),
        Figure("lost", "lost", "count"),
    ),
}


class Target(NamedTuple):
    """One of tq's performance targets: ``scenario.key`` compared with ``limit`` (``>=`` or
    ``<=``), stated for a run where each ``(figure, value)`` of ``sizes`` holds (e.g. 100,000
    tasks)."""

    name: str
    scenario: str
    key: str
    op: str
    limit: float
    sizes: tuple[tuple[str, float], ...] = ()


_MB300_IN_MIB: Final = 300e6 / 2**20

TARGETS: Final = (
    Target("drain >= 60,000 tasks/s", "drain", "steady_per_s", ">=", 60_000,
           (("tasks", 100_000), ("workers", 2))),
    Target("pipelined single submits >= 100,000/s", "enqueue", "single_per_s", ">=", 100_000),
    Target("pipelined submit_nowait >= 100,000/s", "enqueue", "nowait_per_s", ">=", 100_000),
    Target("batch submits >= 300,000/s", "enqueue", "batch_per_s", ">=", 300_000),
    Target("idle submit->result p50 <= 0.5 ms", "latency", "e2e_p50_ms", "<=", 0.5),
    Target("idle submit->result p99 <= 1.1 ms", "latency", "e2e_p99_ms", "<=", 1.1),
    Target("steady submit p99 <= 2 ms", "steady", "submit_p99_ms", "<=", 2.0,
           (("offered_per_s", 20_000), ("duration_s", 30))),
    Target("steady submit->complete p99 <= 5 ms", "steady", "complete_p99_ms", "<=", 5.0,
           (("offered_per_s", 20_000), ("duration_s", 30))),
    Target("broker RSS at 1M pending <= 300 MB (286.1 MiB)", "memory", "rss_after_mib", "<=",
           _MB300_IN_MIB, (("tasks", 1_000_000),)),
    Target("restart to serving <= 5 s (1M tasks)", "restart", "restart_to_ping_s", "<=", 5.0,
           (("tasks", 1_000_000),)),
)  # fmt: skip


def check_targets(scenarios: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the measured value, whether it is met (None: not measured) and
    whether the run had the size the target is stated for (``at_target_size``)."""
    out = []
    for t in TARGETS:
        figures = scenarios.get(t.scenario, {})
        value = figures.get(t.key)
        met = None
        if isinstance(value, int | float):
            met = value >= t.limit if t.op == ">=" else value <= t.limit
        at_size = all(figures.get(key) == size for key, size in t.sizes)
        out.append(
            {
                "target": t.name,
                "figure": f"{t.scenario}.{t.key}",
                "value": value,
                "met": met,
                "at_target_size": at_size if met is not None else None,
            }
        )
    return out


def is_ok(result: Mapping[str, Any]) -> bool:
    """No scenario failed or timed out, and no task was lost or failed in any that ran."""
    if result.get("errors"):
        return False
    for figures in result.get("scenarios", {}).values():
        for key in ("lost", "failed"):
            if figures.get(key):
                return False
        if figures.get("timed_out"):
            return False
    return True


def format_value(value: Any, unit: str) -> str:
    """A figure for a person: ``123,456/s``, ``0.512 ms``, ``1.234 s``, ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, bool) or unit == "bool":
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    formats = {
        "rate": "{:,.0f}/s",
        "ms": "{:.3f} ms",
        "s": "{:.3f} s",
        "us": "{:,.1f} us",
        "mib": "{:,.1f} MiB",
        "bytes": "{:,.0f} B",
        "pct": "{:.0f} %",
        "count": "{:,.0f}",
    }
    return formats.get(unit, "{}").format(value)


def last_line(message: str, width: int = 100) -> str:
    """The last non-blank line of ``message`` (a traceback's verdict), cut to ``width``."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def table_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(scenario, figure, value) for every figure of every scenario that ran, in order."""
    rows: list[tuple[str, str, str]] = []
    for name, figures in result.get("scenarios", {}).items():
        for fig in FIGURES.get(name, ()):
            if fig.key in figures:
                rows.append((name, fig.label, format_value(figures[fig.key], fig.unit)))
    for name, message in result.get("errors", {}).items():
        rows.append((name, "error", last_line(str(message))))
    for name in result.get("skipped", ()):
        rows.append((name, "skipped", "needs a broker of its own (no --url)"))
    return rows


def render(result: Mapping[str, Any]) -> Table:
    cfg = result.get("config", {})
    where = cfg.get("url") or "a fresh fsync-durable broker per scenario"
    table = Table(
        title=(
            f"tq bench: {cfg.get('tasks', 0):,} tasks, {cfg.get('workers')} workers x "
            f"{cfg.get('concurrency')}, {where}"
        )
    )
    table.add_column("scenario")
    table.add_column("figure")
    table.add_column("value", justify="right")
    previous = None
    for scenario, label, value in table_rows(result):
        table.add_row(scenario if scenario != previous else "", label, value)
        previous = scenario
    return table


def render_targets(result: Mapping[str, Any]) -> Table:
    table = Table(
        title="tq's performance targets (docs/benchmarks.md), each stated for a run of its size"
    )
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for row in result.get("targets", ()):
        met = {True: "yes", False: "NO", None: "not measured"}[row["met"]]
        if row["met"] is not None and not row["at_target_size"]:
            met += " (smaller run than the target's)"
        table.add_row(row["target"], format_value(row["value"], "plain"), met)
    return table
