"""The simulator's realistic purchase process: what real order histories look like.

Rates that differ between customers, irregular gaps, silent dropout that
browsing outlives for some, comebacks, and mostly one-time buyers — so
recency alone no longer separates the customers who have stopped buying.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from models.evaluation import exact_auc
from models.simulator import CustomerTruth, SimConfig, SimConfigError, simulate
from schemas.event_time import parse_event_time

DAY_MS = 86_400_000
START = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = SimConfig(customers=1500, days=273, seed=11, start=START, process="realistic")
START_MS = parse_event_time(START.isoformat())
END_MS = START_MS + CONFIG.days * DAY_MS

Run = tuple[dict[str, list[dict[str, Any]]], dict[str, CustomerTruth]]


@pytest.fixture(scope="module")
def run() -> Run:
    events, truth = simulate(CONFIG)
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if "customer_id" in event:
            by_customer[event["customer_id"]].append(event)
    return dict(by_customer), {t.customer_id: t for t in truth}


def order_times(events: list[dict[str, Any]]) -> list[int]:
    return [parse_event_time(e["ts"]) for e in events if e["type"] == "order"]


def test_the_same_config_gives_the_same_history_and_differs_from_planted() -> None:
    small = SimConfig(customers=40, days=90, seed=3, process="realistic")
    assert simulate(small) == simulate(small)
    planted = SimConfig(customers=40, days=90, seed=3)
    assert simulate(small)[0] != simulate(planted)[0]


def test_an_unknown_process_is_refused() -> None:
    with pytest.raises(SimConfigError, match="process"):
        simulate(SimConfig(customers=1, process="steady"))  # type: ignore[arg-type]


def test_most_buyers_buy_once_and_rates_differ_widely(run: Run) -> None:
    by_customer, _ = run
    counts = [n for n in (len(order_times(e)) for e in by_customer.values()) if n]
    assert sum(n == 1 for n in counts) > len(counts) / 2
    # Over-dispersed: the spread of order counts exceeds their mean (Poisson: equal).
    assert statistics.pvariance(counts) > 2 * statistics.mean(counts)
    assert max(counts) >= 8


def test_gaps_are_irregular_with_long_silences_and_comebacks(run: Run) -> None:
    by_customer, _ = run
    gaps = []
    for events in by_customer.values():
        times = sorted(order_times(events))
        gaps += [(b - a) / DAY_MS for a, b in itertools.pairwise(times)]
    # Irregular: gaps vary more than a steady Poisson rhythm (CV 1) would.
    assert statistics.pstdev(gaps) > 1.2 * statistics.mean(gaps)
    # Some customers come back to buy after more than four months without an order.
    assert sum(g > 120 for g in gaps) >= 10


def test_dropout_is_silent_and_some_keep_browsing(run: Run) -> None:
    by_customer, truth = run
    dropped = [t for t in truth.values() if t.churns and order_times(by_customer[t.customer_id])]
    assert len(dropped) > 0.3 * len(truth)
    browsing_after = 0
    for t in dropped:
        assert t.churn_ts is not None
        churn_ms = parse_event_time(t.churn_ts)
        events = by_customer[t.customer_id]
        # (An order's event lands within the day it was planned: the checkout
        # funnel, store hours.)
        assert all(ts <= churn_ms + DAY_MS for ts in order_times(events))
        later = [e for e in events if parse_event_time(e["ts"]) > churn_ms + 30 * DAY_MS]
        browsing_after += any(e["topic"] == "clickstream" for e in later)
    # Neither everyone stopping at once (planted) nor nobody noticing.
    assert 0.15 < browsing_after / len(dropped) < 0.6


def test_recency_alone_no_longer_separates_the_dropped_out(run: Run) -> None:
    by_customer, truth = run
    labels, silence = [], []
    for customer, events in by_customer.items():
        labels.append(int(truth[customer].churns))
        silence.append(END_MS - max(parse_event_time(e["ts"]) for e in events))
    auc = exact_auc(labels, silence)
    assert auc is not None and 0.6 < auc < 0.95
