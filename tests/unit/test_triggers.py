"""Triggers a marketer expects: first assignments, distinct kinds, a daily cap,
and first assignments flagged on segment changes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from examples.notifier import Selection
from models.moments import Moments
from models.pipeline import new_population, update_customer
from models.profile import DAY_MS, ProfileConfig, event
from models.segments import DIMENSIONS, TRIGGER_KINDS, SegmentConfig, Segmenter
from models.training import ModelBundle, ModelConfig

PROFILE = ProfileConfig()
# Every buyer in top_5 and at high churn risk from the start.
EAGER = SegmentConfig(top_5_rank=0.0, churn_high_enter=0.0, churn_high_leave=0.0)


def feed(events: list[dict[str, Any]], config: SegmentConfig) -> Segmenter:
    bundle = ModelBundle(ModelConfig(horizon_days=14))
    moments = Moments(bundle, 14 * DAY_MS, PROFILE, b"k")
    segmenter = Segmenter(config, PROFILE, bundle, b"k")
    population = new_population()
    profile = None
    for e in events:
        profile, _ = update_customer(
            profile, [e], population, PROFILE, sentiment, None, "c1", moments, segmenter
        )
    return segmenter


def sentiment(text: str) -> float:
    return -0.9 if "awful" in text else 0.5


def order(day: float, n: int) -> dict[str, Any]:
    return event("purchases", "order", int(day * DAY_MS), f"o{n}", amount=30.0)


def nps(day: float, n: int, score: int, text: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"score": score, "channel": "email"}
    if text is not None:
        fields["text"] = text
    return event("support", "nps_response", int(day * DAY_MS), f"n{n}", **fields)


def kinds(segmenter: Segmenter) -> list[tuple[str, int]]:
    return [(t["kind"], t["ts"] // DAY_MS) for t in segmenter.triggers]


def test_a_first_assignment_fires_its_trigger() -> None:
    s = feed(
        [order(0, 1)], SegmentConfig(top_5_rank=0.0, churn_high_enter=0.0, trigger_daily_cap=0)
    )
    first = {c["dimension"]: c for c in s.changes}
    assert (
        first["value_tier"]["to_segment"] == "top_5" and first["value_tier"]["from_segment"] is None
    )
    assert first["churn_risk"]["to_segment"] == "high"
    assert {"vip", "churn_alert"} <= {kind for kind, _ in kinds(s)}


def test_nps_and_negative_text_are_distinct_kinds_with_their_own_limits() -> None:
    s = feed([nps(0, 1, 3, "awful service"), nps(0.5, 2, 2, "awful again")], SegmentConfig())
    # One of each kind on day 0; the second answer is within both kinds' daily limit.
    assert sorted(kinds(s)) == [("negative_feedback", 0), ("nps_detractor", 0)]
    assert all(t["kind"] in TRIGGER_KINDS for t in s.triggers)
    assert not set(TRIGGER_KINDS) & set(DIMENSIONS)


def test_a_daily_cap_across_kinds_holds_back_the_rest_and_counts_them() -> None:
    events = [order(0, 1), nps(0.2, 2, 3, "awful"), nps(1.5, 3, 1)]
    capped = feed(events, replace(EAGER, trigger_daily_cap=2))
    uncapped = feed(events, replace(EAGER, trigger_daily_cap=0))
    assert len([k for k in kinds(uncapped) if k[1] == 0]) == 4
    sent_day_0 = [kind for kind, day in kinds(capped) if day == 0]
    assert len(sent_day_0) == 2
    assert sorted(capped.capped) == sorted(
        kind for kind, day in kinds(uncapped) if day == 0 and kind not in sent_day_0
    )
    # A day and a half later the window has room again.
    assert ("nps_detractor", 1) in kinds(capped)


def test_first_assignments_are_flagged_initial_and_moves_are_not() -> None:
    s = feed([order(0, 1), order(40, 2)], SegmentConfig())
    assert s.changes
    for change in s.changes:
        assert change.get("initial", False) is (change["from_segment"] is None)
    assert any(c.get("initial") is None for c in s.changes)


def test_the_example_notifier_delivers_only_what_was_asked_for() -> None:
    s = feed([order(0, 1), nps(0.2, 2, 3, "awful"), order(40, 2)], EAGER)
    wanted = Selection(
        dimensions=frozenset({"lifecycle"}), kinds=frozenset({"vip"}), skip_initial=True
    )
    delivered = [r for r in [*s.changes, *s.triggers] if wanted.wanted(r)]
    assert delivered
    for record in delivered:
        if "trigger_id" in record:
            assert record["kind"] == "vip"
        else:
            assert record["dimension"] == "lifecycle" and not record.get("initial")
    erasure = {"change_id": "e", "customer_id": "c1", "change_kind": "customer_erased"}
    assert wanted.wanted(erasure)
