"""Ground truth for integration tests: expected counts from raw simulator events."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def expected_counts(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Independent recomputation of event counts per customer from raw events.

    Anonymous browsing counts for the customer its ``identify`` links it to;
    ``identify`` itself and malformed records count for nobody.
    """
    alias = {
        e["anonymous_id"]: e["customer_id"]
        for e in events
        if e.get("type") == "identify" and "malformed" not in e
    }
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if "malformed" in e or e["type"] == "identify":
            continue
        customer = e.get("customer_id") or alias.get(e.get("anonymous_id", ""))
        if customer is not None:
            counts[customer][f"{e['topic']}.{e['type']}"] += 1
    return counts
