"""How a ``tq bench`` result is judged and shown: targets, the ok flag, value formatting and
the table rows."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tq.bench.report import (
    FIGURES,
    TARGETS,
    check_targets,
    format_value,
    is_ok,
    last_line,
    render,
    render_targets,
    table_rows,
)


def result(**scenarios: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": {"tasks": 1000, "workers": 2, "concurrency": 8, "url": None},
        "scenarios": scenarios,
        "errors": {},
        "skipped": [],
    }


def test_values_are_formatted_by_unit() -> None:
    assert format_value(123456.7, "rate") == "123,457/s"
    assert format_value(0.5123, "ms") == "0.512 ms"
    assert format_value(1.23456, "s") == "1.235 s"
    assert format_value(830.4, "bytes") == "830 B"
    assert format_value(69.52, "mib") == "69.5 MiB"
    assert format_value(16.54, "us") == "16.5 us"
    assert format_value(56.4, "pct") == "56 %"
    assert format_value(20000, "count") == "20,000"
    assert format_value(None, "ms") == "-"
    assert format_value(False, "count") == "no"


def test_targets_are_met_or_not_and_unmeasured_ones_say_so() -> None:
    rows = check_targets(
        {
            "drain": {"steady_per_s": 70_000.0, "tasks": 100_000, "workers": 2},
            "latency": {"e2e_p50_ms": 0.7, "e2e_p99_ms": 1.0},
        }
    )
    by_name = {r["target"]: r for r in rows}
    assert len(rows) == len(TARGETS)
    assert by_name["drain >= 60,000 tasks/s"]["met"] is True
    assert by_name["drain >= 60,000 tasks/s"]["at_target_size"] is True
    assert by_name["idle submit->result p50 <= 0.5 ms"]["met"] is False
    assert by_name["idle submit->result p99 <= 1.1 ms"]["met"] is True
    assert by_name["steady submit p99 <= 2 ms"]["met"] is None


def test_a_target_met_on_a_smaller_run_is_flagged() -> None:
    rows = check_targets({"drain": {"steady_per_s": 70_000.0, "tasks": 2000, "workers": 2}})
    drain = next(r for r in rows if r["figure"] == "drain.steady_per_s")
    assert drain["met"] is True
    assert drain["at_target_size"] is False


def test_a_run_is_ok_only_without_errors_losses_failures_or_timeouts() -> None:
    assert is_ok(result(drain={"lost": 0, "timed_out": False}, steady={"unfinished": 9}))
    assert not is_ok(result(drain={"lost": 3}))
    assert not is_ok(result(steady={"failed": 1}))
    assert not is_ok(result(latency={"failed": 2}))
    assert not is_ok(result(drain={"lost": 0, "timed_out": True}))
    assert not is_ok({**result(), "errors": {"drain": "TimeoutError: ..."}})


def test_table_rows_follow_the_figures_of_each_scenario_in_order() -> None:
    doc = result(latency={"e2e_p50_ms": 0.75, "e2e_p99_ms": 0.98, "failed": 0, "extra": 1})
    doc["errors"] = {"memory": "TqError: boom"}
    doc["skipped"] = ["restart"]
    rows = table_rows(doc)
    assert rows[:2] == [
        ("latency", "submit->result p50", "0.750 ms"),
        ("latency", "submit->result p99", "0.980 ms"),
    ]
    assert ("latency", "failed", "0") in rows
    assert ("memory", "error", "TqError: boom") in rows
    assert rows[-1][:2] == ("restart", "skipped")
    assert all(fig.key != "extra" for figs in FIGURES.values() for fig in figs)


def test_the_tables_render_as_text() -> None:
    doc = result(drain={"steady_per_s": 36558.3, "tasks": 1000, "workers": 2, "lost": 0})
    doc["targets"] = check_targets(doc["scenarios"])
    console = Console(width=120, record=True)
    console.print(render(doc))
    console.print(render_targets(doc))
    text = console.export_text()
    assert "36,558/s" in text
    assert "smaller run than the target's" in text
    assert "not measured" in text
    assert "tq's performance targets" in text
    assert "issue" not in text.lower()  # no internal references in what users read


def test_an_error_shows_as_the_last_line_of_its_message() -> None:
    doc = result()
    doc["errors"] = {"drain": "TqError: broker exited:\n  File x\n    boom()\nImportError: no\n\n"}
    assert table_rows(doc) == [("drain", "error", "ImportError: no")]
    assert last_line("x" * 300, width=10) == "xxxxxxx..."
