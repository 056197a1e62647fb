"""Backfill inputs: event-time ordering (CSV import: test_history.py)."""

from __future__ import annotations

from streams.producer import in_event_time_order


def test_replay_sorts_by_event_time_and_keeps_malformed_records_in_place() -> None:
    events = [
        {"ts": "2026-01-03T00:00:00Z", "event_id": "c"},
        {"malformed": "not_json", "raw": b"{", "topic": "clickstream"},
        {"ts": 1767225600000, "event_id": "a"},  # 2026-01-01 as epoch ms
        {"ts": "2026-01-02T00:00:00Z", "event_id": "b"},
    ]
    ordered = in_event_time_order(events)
    assert [e.get("event_id", "bad") for e in ordered] == ["a", "b", "c", "bad"]
