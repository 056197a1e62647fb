"""Issue 7 on the real broker: every metric family is exposed, and its counters move.

A short demo-like stream — simulated customers with some malformed records —
goes through one worker; then ``/metrics`` must carry every family the
README lists, with the counters that this stream must move above zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from models.simulator import SimConfig, simulate
from streams.cli.process import WorkerProcess
from streams.producer import send_events
from streams.settings import Settings

MODEL_ENV = {"CHURN_HORIZON_DAYS": "7", "CHURN_MIN_LABELS": "5", "MODEL_WARMUP_EXAMPLES": "30"}

# Families that must be present; counters that this stream must move.
MOVING = (
    "segstream_events_consumed_total",
    "segstream_events_processed_total",
    "segstream_decode_failures_total",
    "segstream_dead_letters_total",
    "segstream_event_lag_seconds_count",
    "segstream_segment_change_lag_seconds_count",
    "segstream_segment_changes_total",
    "segstream_triggers_total",
    "segstream_training_examples_sent_total",
    "segstream_training_examples_learned_total",
    "segstream_customers",
    "segstream_segment_population",
    "segstream_model_version",
    "segstream_model_examples",
    "segstream_cluster_size",
    "segstream_churn_labels",
    "segstream_faust_messages_received_total",
    "segstream_faust_rebalance_done_latency_count",  # rebalances completed
    "segstream_faust_assign_latency_count",  # assignments, each followed by recovery
)
PRESENT = (
    "segstream_consumer_lag_messages",
    "segstream_state_cache_entries",
    "segstream_churn_roc_auc",
    "segstream_churn_log_loss",
    "segstream_churn_rate_ratio",
    "segstream_churn_rate_drifts",
    "segstream_model_snapshots_rejected_total",
    "segstream_faust_topic_partition_end_offset",
    "segstream_faust_total_rebalances",  # rebalances in progress
    "segstream_faust_total_rebalances_recovering",
)


def samples(text: str) -> dict[str, float]:
    """Sum of every sample per metric name (labels dropped)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        value = float(line.rsplit(" ", 1)[1])
        if value == value:  # NaN: present but undefined
            totals[name] = totals.get(name, 0.0) + value
        else:
            totals.setdefault(name, 0.0)
    return totals


def test_every_metric_family_is_exposed_and_its_counters_move(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events, _ = simulate(
        SimConfig(
            customers=60,
            days=30,
            seed=71,
            malformed_rate=0.01,
            start=datetime(2026, 8, 1, tzinfo=UTC),
        )
    )
    worker = worker_factory("w1", **MODEL_ENV)
    worker.wait_ready()
    for _ in send_events(settings, events):
        pass
    deadline = time.monotonic() + 120
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        status, body = worker.get("/metrics")
        assert status == 200
        seen = samples(body.decode())
        if all(seen.get(name, 0.0) > 0 for name in MOVING):
            break
        time.sleep(1)
    still = [name for name in MOVING if seen.get(name, 0.0) <= 0]
    assert not still, f"not moving: {still}"
    absent = [name for name in PRESENT if name not in seen]
    assert not absent, f"not exposed: {absent}"
    # No customer id in any label.
    text = worker.get("/metrics")[1].decode()
    assert "c000001" not in text
