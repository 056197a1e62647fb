"""The pure profile update the worker and the offline path share."""

from __future__ import annotations

import random

from models.profile import DAY_MS, ProfileConfig, apply_event, event, window_totals
from models.profile_summary import summarise

CONFIG = ProfileConfig(windows_days=(1, 7, 30, 90), allowed_lateness_ms=3600_000, dedup_capacity=8)


def replay(events: list[dict[str, object]], config: ProfileConfig = CONFIG) -> dict[str, object]:
    state = None
    for item in events:
        state, _ = apply_event(state, item, config)
    assert state is not None
    return state


def test_out_of_order_events_keep_first_and_last_seen_by_event_time() -> None:
    state = replay(
        [event("clickstream", "page_view", 2_000, "a"), event("clickstream", "search", 1_000, "b")]
    )
    assert state["first_seen_ms"] == 1_000
    assert state["last_seen_ms"] == 2_000
    assert state["lifetime"] == {"clickstream.page_view": 1, "clickstream.search": 1}


def test_redelivered_event_changes_nothing() -> None:
    first = event("purchases", "order", 10 * DAY_MS, "e1", amount=10.0)
    state, outcome = apply_event(None, first, CONFIG)
    before = summarise(state, CONFIG)
    state, outcome = apply_event(state, dict(first), CONFIG)
    assert outcome == "duplicate"
    assert summarise(state, CONFIG) == before


def test_dedup_memory_is_bounded_and_what_it_let_go_is_stale_not_new() -> None:
    events = [event("clickstream", "page_view", 1000 + i, f"e{i:03}") for i in range(100)]
    state = replay(events)
    ids = state["dedup"]["clickstream"]["ids"]
    assert len(ids) <= CONFIG.dedup_capacity
    assert "e099" in ids
    outcomes = set()
    for item in events:
        state, outcome = apply_event(state, dict(item), CONFIG)
        outcomes.add(outcome)
    assert outcomes == {"duplicate", "stale"}
    assert state["lifetime"] == {"clickstream.page_view": 100}


def test_an_event_over_the_dedup_window_behind_its_topic_is_stale() -> None:
    config = ProfileConfig(dedup_window_ms=2 * DAY_MS)
    state = replay([event("clickstream", "page_view", 40 * DAY_MS, "a")], config)
    state, outcome = apply_event(
        state, event("clickstream", "search", 38 * DAY_MS - 1, "b"), config
    )
    assert outcome == "stale"
    state, outcome = apply_event(state, event("clickstream", "search", 38 * DAY_MS, "c"), config)
    assert outcome == "applied"
    # Another topic has its own time: an order a month older is new.
    order = event("purchases", "order", 10 * DAY_MS, "o", amount=5.0)
    state, outcome = apply_event(state, order, config)
    assert outcome == "applied"
    assert state["lifetime"] == {
        "clickstream.page_view": 1,
        "clickstream.search": 1,
        "purchases.order": 1,
    }


def test_state_of_the_old_list_of_ids_is_read_as_recent() -> None:
    state = replay([event("clickstream", "page_view", 10 * DAY_MS, "a")])
    del state["dedup"]
    state["recent_ids"] = ["a", "z"]  # as the profile was written before the window
    for topic in ("clickstream", "support"):
        outcome = apply_event(state, event(topic, "page_view", 10 * DAY_MS, "z"), CONFIG)[1]
        assert outcome == "duplicate"
    assert "recent_ids" not in state and set(state["dedup"]["purchases"]["ids"]) == {"a", "z"}


def test_an_event_no_window_reaches_counts_in_lifetime_only_and_as_late() -> None:
    day10 = 10 * DAY_MS
    state = replay(
        [
            event("purchases", "order", day10 + 1000, "a", amount=10.0),
            event("purchases", "order", day10 + 100 * DAY_MS, "b", amount=10.0),  # day 110
        ]
    )
    # The 90-day window from day 110 starts at day 21: day 10's bucket is gone.
    # (Only a dedup memory longer than the windows lets such an event through.)
    config = ProfileConfig(dedup_window_ms=200 * DAY_MS)
    state, outcome = apply_event(
        state, event("purchases", "order", day10 + 5000, "late", amount=10.0), config
    )
    assert outcome == "late"
    assert state["lifetime"]["purchases.order"] == 3
    assert window_totals(state, 90)["purchases.order"] == 1
    assert state["late_events"] == 1
    assert "10" not in state["buckets"]


def test_an_event_read_long_after_later_ones_still_counts_in_its_window() -> None:
    day10 = 10 * DAY_MS
    state = replay(
        [
            event("purchases", "order", day10 + 1000, "a", amount=10.0),
            event("purchases", "order", day10 + 2 * DAY_MS, "b", amount=10.0),  # watermark: day 12
        ]
    )
    # Past the allowed lateness, and the input watermark a month on: day 10 is
    # still inside the 30 and 90-day windows, so the order counts there.
    state, outcome = apply_event(
        state,
        event("purchases", "order", day10 + 5000, "c", amount=10.0),
        CONFIG,
        input_watermark_ms=day10 + 40 * DAY_MS,
    )
    assert outcome == "applied"
    assert window_totals(state, 7)["purchases.order"] == 3
    assert state["late_events"] == 0


def test_windows_count_only_their_days() -> None:
    events = [event("clickstream", "page_view", d * DAY_MS + 1, f"e{d}") for d in range(100, 200)]
    state = replay(events)
    assert window_totals(state, 1)["clickstream.page_view"] == 1
    assert window_totals(state, 7)["clickstream.page_view"] == 7
    assert window_totals(state, 90)["clickstream.page_view"] == 90
    assert state["lifetime"] == {"clickstream.page_view": 100}


def test_state_stays_bounded_as_event_time_passes() -> None:
    config = ProfileConfig(windows_days=(1, 7, 30, 90), allowed_lateness_ms=0, dedup_capacity=8)
    events = [event("clickstream", "page_view", d * DAY_MS, f"e{d}") for d in range(3650)]
    state = replay(events, config)
    assert len(state["buckets"]) <= 90
    assert len(state["dedup"]["clickstream"]["ids"]) <= 8


def test_replaying_history_in_order_gives_the_same_profile_as_live() -> None:
    rng = random.Random(3)
    events = sorted(
        (
            event(
                "clickstream",
                rng.choice(["page_view", "search"]),
                rng.randrange(0, 60 * DAY_MS),
                f"e{i}",
            )
            for i in range(500)
        ),
        key=lambda item: (item["ts"], item["event_id"]),
    )
    live = replay(events)
    # A second run over the same history (as `segstream evaluate` does) agrees.
    again = replay([dict(item) for item in events])
    assert summarise(live, CONFIG) == summarise(again, CONFIG)
