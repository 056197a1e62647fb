"""A history sent to the live worker twice changes nothing (idempotent replays).

The customers have many more events than the dedup memory keeps ids of, so
the second copy is refused by each customer's applied-through window:
counted as duplicates (within the window) or stale (older), never applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time
from streams.cli.process import WorkerProcess
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import fetch_profile, metric_total, settled_profiles
from tests.integration.helpers import expected_counts

# Depend on which model snapshot was current when they were read.
MODEL_DEPENDENT = ("scores", "value", "explanation")


def test_a_history_sent_twice_to_the_worker_changes_no_profile(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events, _ = simulate(
        SimConfig(customers=30, days=90, seed=11, start=datetime(2026, 1, 5, tzinfo=UTC))
    )
    events = [e for e in events if "malformed" not in e]
    expected = expected_counts(events)
    assert sum(1 for c in expected.values() if c.total() > 150) >= 5
    # Deadlines up to the last event fire once every topic has been idle this long.
    worker = worker_factory(INPUT_IDLE_S="2")
    worker.wait_ready()
    for _ in send_events(settings, events):
        pass
    as_of = max(parse_event_time(e["ts"]) for e in events if e.get("customer_id"))
    settled_profiles(worker, expected, as_of)
    first = quiet_profiles(worker, list(expected))
    assert all(p["as_of_ms"] == as_of for p in first.values())
    refused_before = metric_total(worker, "segstream_duplicate_events_total") + metric_total(
        worker, "segstream_stale_events_total"
    )

    for _ in send_events(settings, events):
        pass
    # Every customer event of the second copy is refused (identify clicks and
    # anonymous browsing go through identity stitching first, then are refused
    # under the customer they name).
    second = sum(c.total() for c in expected.values())
    deadline = time.monotonic() + 120
    refused = 0.0
    while time.monotonic() < deadline:
        refused = (
            metric_total(worker, "segstream_duplicate_events_total")
            + metric_total(worker, "segstream_stale_events_total")
            - refused_before
        )
        if refused >= second:
            break
        time.sleep(0.5)
    assert refused == second, worker.tail_log(20)
    assert metric_total(worker, "segstream_stale_events_total") > 0  # older than the window
    for customer_id, profile in first.items():
        again = fetch_profile(worker, customer_id)
        assert again is not None
        assert again["event_counts"] == profile["event_counts"], customer_id
        assert without_models(again) == without_models(profile), customer_id


def without_models(profile: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in profile.items() if k not in MODEL_DEPENDENT}


def quiet_profiles(worker: WorkerProcess, customers: list[str]) -> dict[str, dict[str, Any]]:
    """Profiles once the deadlines the watermark reached have fired: unchanged for 5 s."""

    def read() -> dict[str, dict[str, Any]]:
        return {c: fetch_profile(worker, c) or {} for c in customers}

    previous, deadline = read(), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(5)
        current = read()
        if {c: without_models(p) for c, p in current.items()} == {
            c: without_models(p) for c, p in previous.items()
        }:
            return current
        previous = current
    raise AssertionError("profiles kept changing after the history was consumed")
