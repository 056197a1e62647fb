"""The pure profile update the worker and the offline path share."""

from __future__ import annotations

from models.profile import apply_event


def test_out_of_order_events_keep_first_and_last_seen_by_event_time() -> None:
    state = apply_event(None, {"type": "page_view", "ts_ms": 2_000})
    state = apply_event(state, {"type": "search", "ts_ms": 1_000})
    assert state["first_seen_ms"] == 1_000
    assert state["last_seen_ms"] == 2_000
    assert state["by_type"] == {"page_view": 1, "search": 1}
