"""Per-customer profile state, updated one event at a time.

Shaped like a stateful map: ``apply_event(state, event) -> state``. The
worker and the offline ``evaluate`` path call exactly this function.

>>> state = apply_event(None, {"type": "page_view", "ts_ms": 1_700_000_000_000})
>>> state = apply_event(state, {"type": "page_view", "ts_ms": 1_700_000_060_000})
>>> state["events"], state["by_type"]["page_view"], state["last_seen_ms"]
(2, 2, 1700000060000)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Profile = dict[str, Any]


def new_profile() -> Profile:
    """An empty profile."""
    return {"events": 0, "by_type": {}, "first_seen_ms": None, "last_seen_ms": None}


def apply_event(state: Profile | None, event: Mapping[str, Any]) -> Profile:
    """Count one event into a customer's profile and return the new profile."""
    profile = new_profile() if state is None else state
    profile["events"] += 1
    by_type = profile["by_type"]
    by_type[event["type"]] = by_type.get(event["type"], 0) + 1
    ts_ms = int(event["ts_ms"])
    first = profile["first_seen_ms"]
    last = profile["last_seen_ms"]
    profile["first_seen_ms"] = ts_ms if first is None else min(first, ts_ms)
    profile["last_seen_ms"] = ts_ms if last is None else max(last, ts_ms)
    return profile
