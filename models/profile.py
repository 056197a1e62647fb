"""Per-customer profile state, updated one event at a time.

Shaped like a stateful map, ``apply_event(state, event, config) -> (state,
outcome)``; the worker and the offline ``evaluate`` path call exactly this
function. State is plain JSON-able data so it can live in a Faust table.

Time is event time only:

* **Windows** are per-customer daily buckets of counts (UTC days). A bucket
  *closes* once the customer's watermark — the latest event time seen for
  that customer — passes the bucket's end plus ``allowed_lateness_ms``. An
  event for a closed bucket still counts in lifetime totals, not in windows.
  Buckets older than the longest window are dropped, so state is bounded.
* **Duplicates**: the ids of the last ``dedup_capacity`` events are kept; a
  redelivered event with one of them changes nothing.

>>> cfg = ProfileConfig()
>>> day = 86_400_000
>>> state, outcome = apply_event(None, event("purchases", "order", 10 * day, "e1"), cfg)
>>> state, outcome = apply_event(state, event("purchases", "order", 10 * day, "e1"), cfg)
>>> outcome, state["lifetime"]["purchases.order"]
('duplicate', 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Profile = dict[str, Any]
Outcome = Literal["applied", "duplicate", "late"]
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """Settings of the profile state (all come from :class:`Settings`)."""

    windows_days: tuple[int, ...] = (1, 7, 30, 90)
    allowed_lateness_ms: int = 6 * 3600 * 1000
    dedup_capacity: int = 256


def event(topic: str, type_: str, ts: int, event_id: str) -> dict[str, Any]:
    """A minimal event mapping (for examples and tests)."""
    return {"topic": topic, "type": type_, "ts": ts, "event_id": event_id}


def new_profile() -> Profile:
    """An empty profile."""
    return {
        "first_seen_ms": None,
        "last_seen_ms": None,
        "lifetime": {},
        "buckets": {},
        "recent_ids": [],
        "late_events": 0,
    }


def apply_event(
    state: Profile | None, event: Mapping[str, Any], config: ProfileConfig
) -> tuple[Profile, Outcome]:
    """Count one event into a customer's profile.

    Parameters
    ----------
    state
        The customer's profile, or ``None`` for a new customer.
    event
        A decoded event as a mapping with ``topic``, ``type``, ``ts`` (epoch
        ms) and ``event_id``.
    config
        Window, lateness and dedup settings.

    Returns
    -------
    The updated profile and what happened: ``applied``, ``duplicate`` (no
    change) or ``late`` (lifetime only; its window had closed).
    """
    profile = new_profile() if state is None else state
    event_id = event["event_id"]
    recent: list[str] = profile["recent_ids"]
    if event_id in recent:
        return profile, "duplicate"
    recent.append(event_id)
    if len(recent) > config.dedup_capacity:
        del recent[: len(recent) - config.dedup_capacity]

    ts = int(event["ts"])
    name = f"{event['topic']}.{event['type']}"
    lifetime = profile["lifetime"]
    lifetime[name] = lifetime.get(name, 0) + 1

    watermark = profile["last_seen_ms"]
    first = profile["first_seen_ms"]
    profile["first_seen_ms"] = ts if first is None else min(first, ts)
    day = ts // DAY_MS
    closed = watermark is not None and (day + 1) * DAY_MS + config.allowed_lateness_ms <= watermark
    outcome: Outcome = "applied"
    if closed:
        profile["late_events"] += 1
        outcome = "late"
    else:
        bucket = profile["buckets"].setdefault(str(day), {})
        bucket[name] = bucket.get(name, 0) + 1
    if watermark is None or ts > watermark:
        profile["last_seen_ms"] = ts
        _expire_buckets(profile, ts // DAY_MS, max(config.windows_days))
    return profile, outcome


def _expire_buckets(profile: Profile, today: int, keep_days: int) -> None:
    buckets: dict[str, Any] = profile["buckets"]
    oldest = today - keep_days + 1
    for key in [k for k in buckets if int(k) < oldest]:
        del buckets[key]


def window_counts(profile: Profile, days: int, as_of_ms: int | None = None) -> dict[str, int]:
    """Event counts by ``topic.type`` over the last ``days`` UTC days.

    The window ends at ``as_of_ms`` (default: the customer's last event).
    """
    end = profile["last_seen_ms"] if as_of_ms is None else as_of_ms
    if end is None:
        return {}
    today = end // DAY_MS
    totals: dict[str, int] = {}
    for key, bucket in profile["buckets"].items():
        if today - days < int(key) <= today:
            for name, count in bucket.items():
                totals[name] = totals.get(name, 0) + count
    return totals


def summary(profile: Profile, config: ProfileConfig) -> dict[str, Any]:
    """The profile as served by the API and written by ``evaluate``."""
    return {
        "first_seen_ms": profile["first_seen_ms"],
        "last_seen_ms": profile["last_seen_ms"],
        "events": sum(profile["lifetime"].values()),
        "lifetime": dict(sorted(profile["lifetime"].items())),
        "windows": {
            f"{days}d": window_counts(profile, days) for days in config.windows_days
        },
        "late_events": profile["late_events"],
    }
