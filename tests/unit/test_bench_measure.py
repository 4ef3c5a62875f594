"""The pure maths of ``tq bench``: percentiles, latency summaries, rates and the pacing
schedule of the steady scenario."""

from __future__ import annotations

import pytest

from tq.bench.measure import (
    Meter,
    Schedule,
    latency_summary,
    per_second,
    percentile,
    steady_rate,
)


def test_percentiles_are_nearest_rank_values_of_real_samples() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_a_percentile_of_few_samples_rounds_up_to_a_sample() -> None:
    assert percentile([10.0, 20.0], 50) == 10.0
    assert percentile([10.0, 20.0], 51) == 20.0
    assert percentile([7.0], 99) == 7.0


def test_a_percentile_of_nothing_is_none_and_a_bad_rank_is_refused() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="101"):
        percentile([1.0], 101)


def test_a_latency_summary_reports_milliseconds_under_its_prefix() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = latency_summary(seconds, "e2e_")
    assert summary == {
        "e2e_count": 100,
        "e2e_p50_ms": 50.0,
        "e2e_p90_ms": 90.0,
        "e2e_p99_ms": 99.0,
        "e2e_max_ms": 100.0,
        "e2e_mean_ms": 50.5,
    }


def test_an_empty_latency_summary_has_every_key_with_none() -> None:
    summary = latency_summary([], "x_")
    assert summary["x_count"] == 0
    assert {k for k, v in summary.items() if v is None} == {
        "x_p50_ms",
        "x_p90_ms",
        "x_p99_ms",
        "x_max_ms",
        "x_mean_ms",
    }


def test_rates_need_a_positive_interval() -> None:
    assert per_second(1000, 0.5) == 2000.0
    assert per_second(1000, 0.0) is None
    assert per_second(1000, None) is None


def test_the_steady_rate_excludes_what_was_done_before_the_first_observation() -> None:
    # 100 already done when first seen at t=1.0; the other 900 took 0.5 s.
    assert steady_rate(1000, 100, 1.0, 1.5) == 1800.0
    assert steady_rate(1000, 1000, 1.0, 1.5) is None  # all done at once: no interval
    assert steady_rate(1000, 0, None, 1.5) is None


def test_a_schedule_spaces_sends_evenly_from_its_start() -> None:
    schedule = Schedule(rate=1000, duration=2.0, start=10.0)
    assert schedule.total == 2000
    assert schedule.due(0) == 10.0
    assert schedule.due(1) == pytest.approx(10.001)
    assert schedule.due(1999) == pytest.approx(11.999)


def test_a_schedule_counts_the_sends_due_at_a_time() -> None:
    schedule = Schedule(rate=100, duration=1.0, start=5.0)
    assert schedule.due_by(4.999) == 0
    assert schedule.due_by(5.0) == 1  # send 0 is due at the start
    assert schedule.due_by(5.0999) == 10
    assert schedule.due_by(5.1) == 11
    assert schedule.due_by(60.0) == 100  # never more than the total


def test_a_schedule_total_covers_a_fractional_product() -> None:
    assert Schedule(rate=20_000, duration=30).total == 600_000
    assert Schedule(rate=3, duration=0.5).total == 2  # sends at 0 and 1/3 s
    assert Schedule(rate=0.1, duration=1).total == 1


def test_a_schedule_needs_a_positive_rate_and_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        Schedule(rate=0, duration=1)
    with pytest.raises(ValueError, match="positive"):
        Schedule(rate=1, duration=-1)


def test_a_meter_starts_over_on_reset() -> None:
    meter = Meter()
    meter.reset("fill", 10)
    meter.done += 4
    meter.reset("drain", 20)
    assert (meter.label, meter.total, meter.done) == ("drain", 20, 0)
