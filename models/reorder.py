"""A customer's events held until the partition's input watermark passes them.

A worker reads the three touchpoint topics at their own pace. Reading a
backlog, Faust takes records from each topic partition in turn, so the
sparse purchase and support topics run days of event time ahead of the
clickstream. Applied in arrival order, a customer's order would be folded in
before the clicks that led to it, and the decisions that depend on the order
of events — lifecycle transitions above all — would differ from a replay of
the same history.

So an event is applied only once the partition's input watermark (the event
time up to which every input topic has been read) reaches it; until then it
is *held* with the customer (``models.state.HeldEvents``), in state that is
written and recovered like the profile, and filed in a deadline index at its
own event time. Released events are applied in ``(ts, event_id)`` order —
the order of the offline replay. Live, with every topic caught up, the
watermark is the newest event's time and nothing is held.

A customer holds at most ``max_held`` events; past that the oldest are
released early (counted as *forced*), so state stays bounded however far the
topics drift apart.

Examples
--------
>>> click = {"ts": 100, "event_id": "a"}
>>> order = {"ts": 200, "event_id": "b"}
>>> release([], [order, click], watermark_ms=150, max_held=10)
([{'ts': 100, 'event_id': 'a'}], [{'ts': 200, 'event_id': 'b'}], 0)
>>> release([order], [], watermark_ms=200, max_held=10)
([{'ts': 200, 'event_id': 'b'}], [], 0)
"""

from __future__ import annotations

from bisect import bisect_right, insort_right
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

E = TypeVar("E", bound=Mapping[str, Any])


def order_key(event: Mapping[str, Any]) -> tuple[int, str]:
    """The order events are applied in: event time, then event id."""
    return int(event["ts"]), str(event["event_id"])


def release(
    held: Sequence[E], arrived: Sequence[E], watermark_ms: int, max_held: int
) -> tuple[list[E], list[E], int]:
    """Split a customer's held and newly arrived events by the watermark.

    Returns the events to apply now (those at or before ``watermark_ms``, and
    the oldest beyond ``max_held``), in order; the events still held, in
    order; and how many were released early because of ``max_held``.
    """
    # Held events are kept in order (they are always a tail of ``pending``),
    # so only the arrivals are placed: inserting each after its equals gives
    # what a stable sort of ``[*held, *arrived]`` gives, without a key per
    # held event on every batch of a customer who holds many.
    pending = list(held)
    for event in arrived:
        insort_right(pending, event, key=order_key)
    # Sorted, so the events at or before the watermark are a prefix.
    ready = bisect_right(pending, watermark_ms, key=_event_time)
    forced = max(len(pending) - ready - max_held, 0)
    cut = ready + forced
    return pending[:cut], pending[cut:], forced


def _event_time(event: Mapping[str, Any]) -> int:
    return int(event["ts"])


def first_held_ms(held: Sequence[Mapping[str, Any]]) -> int | None:
    """When the oldest held event becomes due, or ``None`` when nothing is held.

    ``held`` is in order, as :func:`release` returns it.
    """
    return int(held[0]["ts"]) if held else None
