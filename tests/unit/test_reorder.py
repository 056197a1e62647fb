"""Holding events until the input watermark passes them (models.reorder)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from models.deadlines import DeadlineIndex, DictStore
from models.moments import Moments
from models.pipeline import fire_deadlines, new_population, refile_deadline, update_customer
from models.profile import DAY_MS, ProfileConfig, event
from models.reorder import first_held_ms, release
from models.segments import SegmentConfig, Segmenter
from models.training import ModelBundle, ModelConfig

CONFIG = SegmentConfig(at_risk_days=7, dormant_days=12, churned_days=18, reactivated_days=10)
PROFILE = ProfileConfig()


def e(ts: int, event_id: str) -> dict[str, Any]:
    return {"ts": ts, "event_id": event_id}


def test_release_applies_what_the_watermark_passed_in_event_time_order() -> None:
    ready, still, forced = release([e(50, "b")], [e(300, "c"), e(50, "a"), e(100, "d")], 100, 10)
    assert [x["event_id"] for x in ready] == ["a", "b", "d"]  # ties broken by event id
    assert [x["event_id"] for x in still] == ["c"]
    assert forced == 0
    assert first_held_ms(still) == 300
    assert first_held_ms([]) is None


def test_release_bounds_what_a_customer_holds() -> None:
    arrived = [e(ts, f"x{ts}") for ts in (500, 400, 300, 200)]
    ready, still, forced = release([], arrived, 100, max_held=2)
    assert [x["ts"] for x in ready] == [200, 300]  # the oldest go first
    assert [x["ts"] for x in still] == [400, 500]
    assert forced == 2


def order(day: float, n: int) -> dict[str, Any]:
    return event("purchases", "order", int(day * DAY_MS), f"o{n}", amount=30.0)


def click(day: float, n: int) -> dict[str, Any]:
    return event("clickstream", "page_view", int(day * DAY_MS), f"v{n}", channel="web")


class Worker:
    """One customer through the worker's steps: hold, release, apply, fire deadlines."""

    def __init__(self, reorder: bool) -> None:
        bundle = ModelBundle(ModelConfig(horizon_days=14))
        self.moments = Moments(bundle, 14 * DAY_MS, PROFILE, b"k")
        self.segmenter = Segmenter(CONFIG, PROFILE, bundle, b"k")
        self.index = DeadlineIndex(DictStore(), 0, 3_600_000)
        self.population = new_population()
        self.profiles: dict[str, Any] = {}
        self.held: list[dict[str, Any]] = []
        self.reorder = reorder

    def batch(self, arrived: list[dict[str, Any]], watermark: int) -> None:
        if self.reorder:
            ready, self.held, _ = release(self.held, arrived, watermark, max_held=100)
        else:
            ready = sorted(arrived, key=lambda x: x["ts"])  # the batch alone in order
        if ready:
            profile, _ = update_customer(
                self.profiles.get("c1"),
                ready,
                self.population,
                PROFILE,
                None,
                None,
                "c1",
                self.moments,
                self.segmenter,
            )
            self.profiles["c1"] = profile
            refile_deadline(self.index, "c1", profile, self.moments, self.segmenter)
        fire_deadlines(
            self.index,
            watermark,
            self.profiles.get,
            self.moments,
            self.segmenter,
            self.population,
        )

    def lifecycle(self) -> list[tuple[str | None, str, int]]:
        return [
            (c["from_segment"], c["to_segment"], c["ts"] // DAY_MS)
            for c in self.segmenter.changes
            if c["dimension"] == "lifecycle"
        ]


def read_topics_round_robin(
    topics: dict[str, list[dict[str, Any]]], worker: Worker, batch: int
) -> None:
    """Read each topic ``batch`` records at a time in turn, as Faust reads a backlog.

    The watermark is the smallest frontier among topics with records left
    (a topic read to its end holds nothing back).
    """
    position = dict.fromkeys(topics, 0)
    frontier: dict[str, int] = {}
    while any(position[t] < len(records) for t, records in topics.items()):
        for name, records in topics.items():
            taken = records[position[name] : position[name] + batch]
            position[name] += len(taken)
            for record in taken:
                frontier[name] = max(frontier.get(name, 0), int(record["ts"]))
            behind = [frontier.get(t, 0) for t, rs in topics.items() if position[t] < len(rs)]
            watermark = min(behind) if behind else max(frontier.values())
            worker.batch(taken, watermark)


def history() -> dict[str, list[dict[str, Any]]]:
    # Browsing from day 0.5, orders on days 2, 25 and 27: a prospect who
    # buys, goes quiet, churns, and comes back.
    orders = [order(2, 1), order(25, 2), order(27, 3)]
    clicks = [click(d, i) for i, d in enumerate([0.5, 2, 3, 9, 24, 25.5, 26, 40, 60])]
    return {"purchases": orders, "clickstream": clicks}


def test_a_backlog_read_topic_by_topic_takes_the_replays_transitions() -> None:
    topics = history()
    replay = Worker(reorder=True)
    for record in sorted([*topics["purchases"], *topics["clickstream"]], key=lambda x: x["ts"]):
        replay.batch([record], int(record["ts"]))
    live = Worker(reorder=True)
    read_topics_round_robin(topics, live, batch=2)
    assert live.lifecycle() == replay.lifecycle()
    assert replay.lifecycle()[:2] == [(None, "prospect", 0), ("prospect", "new", 2)]
    assert ("churned", "reactivated", 25) in replay.lifecycle()
    assert not live.held

    # Without holding, the orders read ahead of the clicks change the path:
    # the customer is never seen as a prospect.
    unordered = Worker(reorder=False)
    read_topics_round_robin(topics, unordered, batch=2)
    assert unordered.lifecycle()[0] == (None, "new", 2)


@pytest.mark.parametrize("seed", range(8))
def test_random_histories_read_out_of_step_take_the_replays_transitions(seed: int) -> None:
    rng = random.Random(seed)
    topics = {
        "purchases": [
            order(d, i) for i, d in enumerate(sorted(rng.uniform(0, 80) for _ in range(6)))
        ],
        "clickstream": [
            click(d, i) for i, d in enumerate(sorted(rng.uniform(0, 80) for _ in range(25)))
        ],
    }
    replay = Worker(reorder=True)
    for record in sorted([*topics["purchases"], *topics["clickstream"]], key=lambda x: x["ts"]):
        replay.batch([record], int(record["ts"]))
    live = Worker(reorder=True)
    read_topics_round_robin(topics, live, batch=rng.randint(1, 5))
    assert live.lifecycle() == replay.lifecycle()
    assert [c["change_id"] for c in live.segmenter.changes if c["dimension"] == "lifecycle"] == [
        c["change_id"] for c in replay.segmenter.changes if c["dimension"] == "lifecycle"
    ]
