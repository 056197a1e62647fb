"""The benchmarks' figures, from the samples a worker's /metrics gave."""

from __future__ import annotations

from bench.audiences_bench import cpu_per_event
from bench.pipeline_bench import steady_rate


def test_the_steady_rate_counts_the_events_between_the_samples_not_the_thresholds() -> None:
    # A worker answers between batches: the sample past 10% shows 30% read,
    # and the one past 90% shows everything.
    progress = [(0.5, 0.0), (1.0, 300.0), (2.0, 600.0), (3.0, 1000.0)]
    figures = steady_rate(progress, 1000)
    assert figures["steady_events_per_s"] == 350.0  # (1000 - 300) / (3.0 - 1.0)
    assert figures["first_event_s"] == 1.0


def test_the_steady_rate_is_none_without_two_samples_in_the_span() -> None:
    assert steady_rate([(1.0, 0.0), (2.0, 1000.0)], 1000)["steady_events_per_s"] is None
    assert steady_rate([(1.0, 50.0), (2.0, 80.0)], 1000)["steady_events_per_s"] is None


def test_cpu_per_event_reports_each_run_and_the_median() -> None:
    runs = [
        {"worker_cpu_s": 2.0, "events": 10_000},
        {"worker_cpu_s": 2.2, "events": 10_000},
        {"worker_cpu_s": 1.8, "events": 10_000},
    ]
    assert cpu_per_event(runs) == {"of_each_run": [200.0, 220.0, 180.0], "median": 200.0}
