"""Identity stitching policy: anonymous browsing before and after identify."""

from __future__ import annotations

from models.identity import apply_anonymous


def anon(event_id: str) -> dict[str, str]:
    return {"event_id": event_id, "anonymous_id": "anon-1", "type": "page_view"}


def identify(customer_id: str = "c1") -> dict[str, str]:
    return {
        "event_id": "id",
        "anonymous_id": "anon-1",
        "customer_id": customer_id,
        "type": "identify",
    }


def test_events_before_identify_are_released_to_the_customer() -> None:
    state = None
    for i in range(3):
        state, released, outcome = apply_anonymous(state, anon(f"a{i}"), capacity=10)
        assert (released, outcome) == ([], "held")
    state, released, outcome = apply_anonymous(state, identify(), capacity=10)
    assert outcome == "identified"
    assert [e["event_id"] for e in released] == ["a0", "a1", "a2"]
    assert all(e["customer_id"] == "c1" for e in released)
    assert state["pending"] == []


def test_events_after_identify_are_forwarded_at_once() -> None:
    state, _, _ = apply_anonymous(None, identify(), capacity=10)
    state, released, outcome = apply_anonymous(state, anon("later"), capacity=10)
    assert outcome == "forwarded"
    assert released == [dict(anon("later"), customer_id="c1", stitched=True)]


def test_pending_anonymous_events_are_bounded_dropping_the_oldest() -> None:
    state = None
    outcomes = []
    for i in range(5):
        state, _, outcome = apply_anonymous(state, anon(f"a{i}"), capacity=3)
        outcomes.append(outcome)
    assert outcomes[-1] == "held_dropping_oldest"
    assert [e["event_id"] for e in state["pending"]] == ["a2", "a3", "a4"]


def test_a_redelivered_anonymous_event_is_held_once() -> None:
    state = None
    for event_id in ("a0", "a1", "a0"):
        state, _, _ = apply_anonymous(state, anon(event_id), capacity=10)
    assert state is not None
    assert [e["event_id"] for e in state["pending"]] == ["a0", "a1"]
