"""Segment rules, changes and triggers as pure functions (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from models.deadlines import DeadlineIndex, DictStore
from models.moments import Moments
from models.pipeline import fire_deadlines, new_population, refile_deadline, update_customer
from models.profile import DAY_MS, ProfileConfig, event
from models.segments import (
    DIMENSIONS,
    SegmentConfig,
    Segmenter,
    churn_risk_band,
    engagement_level,
    lifecycle_stage,
    loyalty_quadrant,
    rfm_segment,
    value_tier,
)
from models.training import ModelBundle, ModelConfig
from streams.cli.tail import describe_record

CONFIG = SegmentConfig(at_risk_days=7, dormant_days=12, churned_days=18, reactivated_days=10)
PROFILE = ProfileConfig()


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 1, "Champions"),
        (5, 4, 3, "Champions"),
        (4, 5, 5, "Loyal Customers"),
        (3, 4, 2, "Loyal Customers"),
        (5, 2, 4, "Potential Loyalists"),
        (4, 3, 1, "Potential Loyalists"),
        (5, 1, 3, "New Customers"),
        (4, 1, 3, "Promising"),
        (3, 3, 3, "Need Attention"),
        (3, 1, 4, "About to Sleep"),
        (3, 2, 1, "About to Sleep"),
        (2, 3, 3, "At Risk"),
        (1, 4, 4, "At Risk"),
        (2, 5, 5, "Can't Lose Them"),
        (1, 5, 1, "Can't Lose Them"),
        (2, 2, 2, "Hibernating"),
        (1, 1, 4, "Hibernating"),
        (1, 2, 1, "Lost"),
    ],
)
def test_rfm_map_follows_the_domain_grid(r: int, f: int, m: int, segment: str) -> None:
    assert rfm_segment(r, f, m) == segment


def test_every_rfm_cell_has_a_segment() -> None:
    cells = {rfm_segment(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    assert len(cells) == 11


def test_lifecycle_moves_with_time_since_the_last_order() -> None:
    p = {"first_order_ms": 0, "last_order_ms": 0, "lifecycle_returned_ms": None}
    stages = [lifecycle_stage(p, d * DAY_MS, None, CONFIG)[0] for d in (1, 6, 8, 13, 19)]
    assert stages == ["new", "new", "at_risk", "dormant", "churned"]
    assert lifecycle_stage({**p, "last_order_ms": None}, 0, None, CONFIG)[0] == "prospect"
    returned = {**p, "last_order_ms": 40 * DAY_MS, "lifecycle_returned_ms": 40 * DAY_MS}
    assert lifecycle_stage(returned, 45 * DAY_MS, "churned", CONFIG)[0] == "reactivated"
    assert lifecycle_stage(returned, 51 * DAY_MS, "reactivated", CONFIG)[0] == "at_risk"


def test_levels_quadrants_and_tiers() -> None:
    c = SegmentConfig()
    assert [engagement_level(n, c) for n in (0, 1, 3, 8)] == [
        "inactive",
        "light",
        "medium",
        "heavy",
    ]
    assert loyalty_quadrant(2, 4, c) == "active_loyal"
    assert loyalty_quadrant(0, 0, c) == "drop_off"
    assert [value_tier(r, c) for r in (None, 0.5, 0.85, 0.97)] == [
        "rest",
        "rest",
        "top_20",
        "top_5",
    ]


def test_churn_band_has_hysteresis() -> None:
    c = SegmentConfig()
    path, band = [], None
    for p in (0.2, 0.45, 0.35, 0.72, 0.65, 0.55, 0.25):
        band = churn_risk_band(p, band, c)
        path.append(band)
    assert path == ["low", "medium", "medium", "high", "high", "medium", "low"]


def run(events: list[dict[str, Any]], watermarks: list[int]) -> Segmenter:
    """One customer through state, moments and segments, deadlines fired at ``watermarks``."""
    bundle = ModelBundle(ModelConfig(horizon_days=14))
    moments = Moments(bundle, 14 * DAY_MS, PROFILE, b"k")
    segmenter = Segmenter(CONFIG, PROFILE, bundle, b"k")
    index = DeadlineIndex(DictStore(), 0, 3_600_000)
    population = new_population()
    profiles: dict[str, Any] = {}
    for e, watermark in zip(events, watermarks, strict=True):
        profile, _ = update_customer(
            profiles.get("c1"), [e], population, PROFILE, None, None, "c1", moments, segmenter
        )
        profiles["c1"] = profile
        refile_deadline(index, "c1", profile, moments, segmenter)
        fire_deadlines(index, watermark, profiles.get, moments, segmenter, population)
    return segmenter


def order(day: float, n: int) -> dict[str, Any]:
    return event("purchases", "order", int(day * DAY_MS), f"o{n}", amount=30.0)


def click(day: float, n: int) -> dict[str, Any]:
    return event("clickstream", "page_view", int(day * DAY_MS), f"v{n}", channel="web")


def lifecycle_path(segmenter: Segmenter) -> list[tuple[str | None, str, int]]:
    return [
        (c["from_segment"], c["to_segment"], c["ts"] // DAY_MS)
        for c in segmenter.changes
        if c["dimension"] == "lifecycle"
    ]


def test_a_quiet_customer_moves_to_churned_on_the_watermark_with_a_win_back_first() -> None:
    # One order, then silence; other customers' events carry the watermark to day 30.
    s = run([order(0, 1)], [30 * DAY_MS])
    assert lifecycle_path(s) == [
        (None, "new", 0),
        ("new", "at_risk", 7),
        ("at_risk", "dormant", 12),
        ("dormant", "churned", 18),
    ]
    kinds = [(t["kind"], t["ts"] // DAY_MS) for t in s.triggers]
    assert ("win_back", 12) in kinds


def test_replay_takes_the_same_transitions_whatever_the_watermark_cadence() -> None:
    events = [order(0, 1), click(2, 2), click(9, 3), order(25, 4), click(26, 5), click(60, 6)]
    live = run(events, [0, 0, 0, 25 * DAY_MS, 25 * DAY_MS, 60 * DAY_MS])
    replay = run(events, [int(e["ts"]) for e in events])
    ids = lambda s: [(c["change_id"], c["dimension"], c["to_segment"]) for c in s.changes]  # noqa: E731
    assert lifecycle_path(live) == lifecycle_path(replay)
    assert [c for c in ids(live) if c[1] == "lifecycle"] == [
        c for c in ids(replay) if c[1] == "lifecycle"
    ]
    # The return after churn is a reactivation, with a welcome-back trigger.
    assert ("churned", "reactivated", 25) in lifecycle_path(live)
    assert "welcome_back" in {t["kind"] for t in live.triggers}


def test_changes_carry_every_contract_field_and_deterministic_ids() -> None:
    a = run([order(0, 1), click(1, 2)], [0, 0])
    b = run([order(0, 1), click(1, 2)], [0, 0])
    assert [c["change_id"] for c in a.changes] == [c["change_id"] for c in b.changes]
    change = a.changes[0]
    assert set(change) == {
        "change_id", "customer_id", "dimension", "from_segment", "to_segment", "ts",
        "reason", "scores", "model_version", "initial",
    }  # fmt: skip
    assert {c["dimension"] for c in a.changes} <= set(DIMENSIONS)


def test_triggers_are_rate_limited_per_customer_and_kind() -> None:
    # Three abandoned carts in one day fire one reminder.
    events = [
        event("clickstream", "add_to_cart", int(h * 3_600_000), f"a{h}", channel="web")
        for h in (0, 2, 4)
    ]
    events.append(click(0.5, 9))
    s = run(events, [0, 0, 0, int(0.5 * DAY_MS)])
    assert [t["kind"] for t in s.triggers].count("cart_abandoned") == 1


def test_erasure_takes_the_customer_out_of_segment_counts() -> None:
    bundle = ModelBundle(ModelConfig())
    segmenter = Segmenter(CONFIG, PROFILE, bundle, b"k")
    population = new_population()
    profile, _ = update_customer(
        None, [order(0, 1)], population, PROFILE, None, None, "c1", None, segmenter
    )
    assert profile is not None
    assert population["counts"]["lifecycle"] == {"new": 1}
    segmenter.erase(profile, population)
    assert all(not by_value for by_value in population["counts"].values())
    assert population["clv"]["n"] == 0


def test_tail_prints_one_readable_line_per_record() -> None:
    line = describe_record(
        "changes",
        {"dimension": "lifecycle", "customer_id": "c9", "from_segment": None,
         "to_segment": "new", "ts": 0, "reason": "first order"},
    )  # fmt: skip
    assert line == "1970-01-01 00:00 CHANGE  lifecycle       c9  ∅ → new  (first order)"
