"""Purchase histories drawn from the BG/NBD process, for testing churn and value models.

The simulator (:mod:`models.simulator`) plants personas whose churners stop
everything at once, which any recency rule separates. Real purchase
histories look different: purchase rates vary widely between customers, most
buy once or twice, and a customer drops out silently. This module draws
histories from the textbook buy-till-you-die process of Fader, Hardie & Lee
(2005) with known parameters, so a model can be checked against the truth
and against recency alone on data whose generating process is known:

* each customer buys at rate λ ~ Gamma(r, α) (α in days) while alive;
* after each repeat purchase they drop out with probability p ~ Beta(a, b);
* their first purchase falls uniformly in the first ``entry_days``.

Only purchases are produced (no clicks, no tickets): what a shop's order
export holds.

>>> history = bgnbd_history(customers=3, seed=1, start_ms=0, calibration_days=100,
...                         holdout_days=100)
>>> sorted({e["topic"] for e in history.events}), len(history.holdout_ms)
(['purchases'], 3)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.profile import DAY_MS

# Close to published fits of a retail cohort, per day: r = 0.24, α = 4.4
# weeks, a = 0.79, b = 2.43.
RETAIL_PARAMS = (0.24, 30.8, 0.79, 2.43)


@dataclass
class PurchaseHistory:
    """Events up to the cutoff, and what each customer did after it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    cutoff_ms: int = 0
    # customer id -> event times of their orders in the holdout (after the cutoff)
    holdout_ms: dict[str, list[int]] = field(default_factory=dict)
    # customer id -> whether they had dropped out by the cutoff (the hidden truth)
    dropped_out: dict[str, bool] = field(default_factory=dict)


def bgnbd_history(
    customers: int,
    seed: int,
    start_ms: int = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000),
    calibration_days: float = 273,  # 39 weeks
    holdout_days: float = 273,
    entry_days: float = 84,
    params: tuple[float, float, float, float] = RETAIL_PARAMS,
) -> PurchaseHistory:
    """Order events of ``customers`` BG/NBD customers up to the cutoff
    (``start + calibration_days``), and their holdout orders."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    r, alpha, a, b = params
    cutoff = start_ms + int(calibration_days * DAY_MS)
    end = cutoff + int(holdout_days * DAY_MS)
    out = PurchaseHistory(cutoff_ms=cutoff)
    for n in range(customers):
        customer_id = f"b{n:06d}"
        rate = rng.gammavariate(r, 1.0 / alpha)  # purchases per day
        dropout = rng.betavariate(a, b)
        spend = round(rng.lognormvariate(3.5, 0.6), 2)
        t = start_ms + int(rng.uniform(0, entry_days) * DAY_MS)
        times, alive, dead_at = [t], True, None
        while alive:
            t += int(rng.expovariate(rate) * DAY_MS) if rate > 0 else end
            if t >= end:
                break
            times.append(t)
            if rng.random() < dropout:
                alive, dead_at = False, t
        for i, ts in enumerate(ts for ts in times if ts <= cutoff):
            out.events.append(
                {
                    "topic": "purchases",
                    "type": "order",
                    "event_id": f"{customer_id}-o{i}",
                    "order_id": f"{customer_id}-o{i}",
                    "customer_id": customer_id,
                    "amount": round(spend * rng.uniform(0.7, 1.3), 2),
                    "currency": "EUR",
                    "ts": datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat(),
                }
            )
        out.holdout_ms[customer_id] = [ts for ts in times if cutoff < ts <= end]
        out.dropped_out[customer_id] = dead_at is not None and dead_at <= cutoff
    out.events.sort(key=lambda e: (e["ts"], e["event_id"]))
    return out


def bought_within(history: PurchaseHistory, days: float) -> dict[str, bool]:
    """Per customer: whether they ordered within ``days`` after the cutoff."""
    limit = history.cutoff_ms + days * DAY_MS
    return {c: any(ts <= limit for ts in times) for c, times in history.holdout_ms.items()}
