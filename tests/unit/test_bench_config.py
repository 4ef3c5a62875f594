"""What a ``tq bench`` run is told to do: scenario lists, knob validation, payloads and
which scenarios an existing broker (``--url``) can serve."""

from __future__ import annotations

import pytest

from tq.bench.config import SCENARIOS, BenchConfig, parse_scenarios, payload_of
from tq.bench.procs import broker_settings, worker_argv
from tq.errors import ValidationError


def test_all_means_every_scenario_in_canonical_order() -> None:
    assert parse_scenarios("all") == SCENARIOS
    assert parse_scenarios("latency, enqueue,latency") == ("enqueue", "latency")


def test_an_unknown_scenario_is_named_in_the_error() -> None:
    with pytest.raises(ValidationError, match="warp"):
        parse_scenarios("enqueue,warp")
    with pytest.raises(ValidationError, match="unknown scenario"):
        parse_scenarios(" , ")


def test_knobs_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="workers"):
        BenchConfig(workers=0)
    with pytest.raises(ValidationError, match="rate"):
        BenchConfig(rate=0)
    with pytest.raises(ValidationError, match="stored"):
        BenchConfig(stored=0)


def test_stored_defaults_to_tasks() -> None:
    assert BenchConfig(tasks=500).stored_tasks == 500
    assert BenchConfig(tasks=500, stored=7).stored_tasks == 7


def test_an_existing_broker_runs_only_the_scenarios_that_need_no_broker_of_their_own() -> None:
    run, skipped = BenchConfig(url="tq://127.0.0.1:7420").runnable()
    assert run == ["enqueue", "latency", "steady"]
    assert skipped == ["drain", "memory", "restart"]
    assert BenchConfig().runnable() == (list(SCENARIOS), [])


def test_payloads_have_the_asked_size() -> None:
    assert payload_of(0) == b""
    assert len(payload_of(100)) == 100
    assert payload_of(5) == b"tq-be"


def test_the_config_document_names_the_queue_and_the_broker_overrides() -> None:
    data = BenchConfig(broker_settings=(("persistence.sync_mode", "relaxed"),)).as_dict()
    assert data["queue"] == "tq-bench"
    assert data["broker_settings"] == {"persistence.sync_mode": "relaxed"}
    assert data["stored"] == data["tasks"]


def test_spawned_brokers_keep_fsync_but_take_the_whole_backlog() -> None:
    settings = broker_settings(BenchConfig(tasks=100_000, stored=1_000_000))
    assert settings["broker.backpressure_threshold"] >= 1_000_000  # type: ignore[operator]
    assert "persistence.sync_mode" not in settings
    assert settings["api.rest_port"] == "0"  # front doors on, as by default, on free ports
    over = broker_settings(BenchConfig(broker_settings=(("broker.backpressure_threshold", "5"),)))
    assert over["broker.backpressure_threshold"] == "5"


def test_workers_are_told_the_url_and_the_bench_queue() -> None:
    argv = worker_argv("tq://127.0.0.1:9", 8)
    assert argv[1:5] == ["-m", "tq", "--set", "worker.broker_url=tq://127.0.0.1:9"]
    assert argv[argv.index("worker") + 1] == "tq.bench.tasks"
    assert argv[argv.index("--queues") + 1] == "tq-bench"
