"""Which events a profile has applied: duplicates and replays change nothing.

Each input topic delivers a customer's events in the order they were
produced, which for a live producer and for a history replayed in event
time is event-time order, give or take a little. So per topic, a profile
keeps its *applied-through* time — the latest event time applied from that
topic — and the ids of the events applied from it within ``window_ms``
before that time or later. An event is then:

* a **duplicate** when its id is remembered;
* **stale** when it is more than the window older than its topic's
  applied-through time (or than the oldest id kept, once more than
  ``capacity`` fall in the window): it cannot be told apart from a replay
  of what was applied, so it is not applied either;
* **new** otherwise.

This is exact within the memory, whatever the length of the history, and
the memory is bounded per customer. Topics are kept apart so that a
backfill that loads one topic weeks ahead of another (orders first, then
clicks) refuses nothing.

Browsing held until an identify (``identified_by``) is new to the customer
however old it is: the identity state releases it once. Only its id is
checked, and the id is kept for a window from when it was applied.

>>> memory = {}
>>> day = 86_400_000
>>> remember(memory, "clickstream", "e1", 10 * day, 7 * day, 100)
>>> seen(memory, "clickstream", "e1", 10 * day, 7 * day)
'duplicate'
>>> remember(memory, "clickstream", "e2", 20 * day, 7 * day, 100)
>>> seen(memory, "clickstream", "e0", 12 * day, 7 * day)  # over a week behind e2: replayed?
'stale'
>>> seen(memory, "purchases", "o1", 12 * day, 7 * day) is None  # another topic: new
True
"""

from __future__ import annotations

from typing import Literal

from models.state import TopicMemory

HOUR_MS = 3_600_000

Refusal = Literal["duplicate", "stale"]


def seen(
    memory: dict[str, TopicMemory],
    topic: str,
    event_id: str,
    ts: int,
    window_ms: int,
    identified: bool = False,
) -> Refusal | None:
    """Whether an event must not be applied (``duplicate``, ``stale``), or ``None``: new."""
    kept = memory.get(topic)
    if kept is None:
        return None
    if identified:
        return "duplicate" if event_id in kept["ids"] else None
    if ts < kept["through"] - window_ms:
        return "stale"
    floor = kept["floor"]
    if floor is not None and (ts, event_id) <= (floor[0], floor[1]):
        return "stale"
    return "duplicate" if event_id in kept["ids"] else None


def remember(
    memory: dict[str, TopicMemory],
    topic: str,
    event_id: str,
    ts: int,
    window_ms: int,
    capacity: int,
    identified: bool = False,
) -> None:
    """Note an applied event; forget the ids the window or the capacity let go."""
    kept = memory.get(topic)
    if kept is None:
        kept = memory[topic] = {"through": ts, "ids": {}, "floor": None}
    before = kept["through"]
    ids = kept["ids"]
    if identified:
        # Old browsing: kept a window from when it was applied, not from its time.
        ids[event_id] = max(ts, before)
    else:
        ids[event_id] = ts
        if ts > before:
            kept["through"] = ts
            if ts // HOUR_MS > before // HOUR_MS:
                # The window moved into a new hour: forget what fell out of it.
                # (Ids left between such moves are harmless: stale by time anyway.)
                oldest = ts - window_ms
                for old_id in [i for i, at in ids.items() if at < oldest]:
                    del ids[old_id]
    if len(ids) > capacity:
        # Too many in the window: keep the newest three quarters, and remember
        # where the memory now starts, so what is older is stale, never new.
        keep = max(capacity * 3 // 4, 1)
        by_age = sorted(ids.items(), key=lambda item: (item[1], item[0]))
        dropped = by_age[: len(by_age) - keep]
        for old_id, _ in dropped:
            del ids[old_id]
        last_id, last_at = dropped[-1]
        kept["floor"] = [last_at, last_id]


def from_recent_ids(
    recent_ids: list[str], topics: tuple[str, ...], at: int
) -> dict[str, TopicMemory]:
    """The memory of a profile written before it: a list of the latest ids, no times
    or topics. Each id is kept for every topic, as of ``at`` (the customer's
    latest event time), so they go a window after the topics move on."""
    return {
        topic: {"through": 0, "ids": {str(event_id): at for event_id in recent_ids}, "floor": None}
        for topic in topics
    }
