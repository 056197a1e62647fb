"""Identity stitching: anonymous browsing becomes the customer's once identified.

Policy (documented in the README):

* Anonymous clickstream events (``anonymous_id``, no ``customer_id``) are
  keyed by ``anonymous_id`` and held per anonymous id — at most ``capacity``
  of them, oldest dropped first — until an ``identify`` event links that
  anonymous id to a customer.
* On ``identify`` the held events are re-issued with the ``customer_id``
  set, so they count in the customer's profile with their original event
  time and event id, and the identify's id in ``identified_by``: however
  old they are, they are new to the customer (see
  :func:`models.profile.seen_outcome`). Each is released once; a redelivery
  is a duplicate by id.
* Anonymous events that arrive *after* the identify are re-issued at once.
* Anonymous events that are never identified stay unattributed.
* An event already held is not held twice (a redelivery or a replay).

>>> state, out, outcome = apply_anonymous(None, {"event_id": "a1", "anonymous_id": "x"}, 10)
>>> outcome, out
('held', [])
>>> state, out, outcome = apply_anonymous(
...     state, {"event_id": "i1", "anonymous_id": "x", "customer_id": "c9", "type": "identify"}, 10)
>>> outcome, out
('identified', [{'event_id': 'a1', 'anonymous_id': 'x', 'customer_id': 'c9', 'stitched': True, \
'identified_by': 'i1'}])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from models.state import IdentityState as IdentityState  # declared in models.state

IdentityOutcome = Literal["held", "held_dropping_oldest", "identified", "forwarded"]


def apply_anonymous(
    state: IdentityState | None, event: Mapping[str, Any], capacity: int
) -> tuple[IdentityState, list[dict[str, Any]], IdentityOutcome]:
    """Handle one anonymous or identify event for its anonymous id.

    Returns the new state, the events to re-issue under the customer's id,
    and what happened.
    """
    current: IdentityState = state if state is not None else {"customer_id": None, "pending": []}
    if event.get("type") == "identify" and event.get("customer_id"):
        customer_id = str(event["customer_id"])
        current["customer_id"] = customer_id
        released = [
            dict(pending, customer_id=customer_id, stitched=True, identified_by=event["event_id"])
            for pending in current["pending"]
        ]
        current["pending"] = []
        return current, released, "identified"
    if current["customer_id"] is not None:
        return (
            current,
            [dict(event, customer_id=current["customer_id"], stitched=True)],
            "forwarded",
        )
    pending: list[dict[str, Any]] = current["pending"]
    if any(held["event_id"] == event["event_id"] for held in pending):
        return current, [], "held"  # a redelivery of an event already held
    pending.append(dict(event))
    if len(pending) > capacity:
        del pending[: len(pending) - capacity]
        return current, [], "held_dropping_oldest"
    return current, [], "held"
