"""Feature vectors for the online models, computed from a customer's profile.

One function, :func:`feature_vector`, turns profile state into a fixed set
of numbers in ``[0, 1]`` — the input of the behavioural clustering. It is
pure (no Faust, no model), so the worker, the trainer and ``segstream
evaluate`` compute identical vectors from identical state.

Scaling is fixed, not learned: counts and money are log-scaled against a
reference level and capped, rates are already in ``[0, 1]``, durations are
divided by a horizon and capped. Fixed scaling keeps cluster centroids
readable (a persona label is read straight off them) and keeps a replay
deterministic. The churn model reads its own inputs, which never saturate
(:mod:`models.churn_features`), and takes only the behavioural features
from this vector.

Missing values — a rate with a zero denominator, a survey never answered —
take a documented neutral value (:data:`MISSING`), never NaN, and every
feature is always present, so models never see a feature appear or vanish.

==========================  ====================================================
feature                     meaning (scaled to [0, 1])
==========================  ====================================================
tenure                      days since first seen, / 30 (new customers stand out)
days_since_seen             days since the last event of any kind, / 60
days_since_order            days since the last order, / 90 (1 before any order)
has_ordered                 1 after a first order
orders_per_month            orders per 30 days of tenure (tenure ≥ 30), log-scaled, ref 8
aov                         average order value, log-scaled, ref 1,000
discount_share              share of orders with a discount
refund_share                refunds per order, capped at 1
sessions_per_month          sessions per 30 days of tenure, log-scaled, ref 30
pages_per_session           pages per session, log-scaled, ref 20
activity_trend              events in the last 7 days against a quarter of the
                            last 30 days' (1 = steady, 0 = stopped), / 2
email_ctr                   email clicks / opens
cart_abandonment            abandoned carts / decided carts
tickets_per_month           tickets opened per 30 days of tenure, log-scaled, ref 5
complaints_per_month        complaints per 30 days of tenure, log-scaled, ref 3
dissatisfaction             (5 − mean CSAT) / 4
detraction                  (10 − latest NPS) / 10
negative_sentiment          (1 − mean ticket-text sentiment) / 2
open_tickets                open tickets, / 3
==========================  ====================================================

>>> from models.profile import ProfileConfig, apply_event, event
>>> p, _ = apply_event(None, event("purchases", "order", 0, "e1", amount=50.0), ProfileConfig())
>>> x = feature_vector(p, ProfileConfig(), as_of_ms=30 * 86_400_000)
>>> list(x) == list(FEATURES), x["has_ordered"], x["days_since_order"]
(True, 1.0, 0.3333)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, get_args

from models.profile import DAY_MS, Profile, ProfileConfig, cart_episodes, net_revenue
from schemas.records import ClickType, PurchaseType, SupportType

FEATURES: Final = (
    "tenure",
    "days_since_seen",
    "days_since_order",
    "has_ordered",
    "orders_per_month",
    "aov",
    "discount_share",
    "refund_share",
    "sessions_per_month",
    "pages_per_session",
    "activity_trend",
    "email_ctr",
    "cart_abandonment",
    "tickets_per_month",
    "complaints_per_month",
    "dissatisfaction",
    "detraction",
    "negative_sentiment",
    "open_tickets",
)

# Neutral values for features whose input does not exist yet.
MISSING: Final[Mapping[str, float]] = {
    "aov": 0.0,
    "discount_share": 0.0,
    "refund_share": 0.0,
    "pages_per_session": 0.0,
    "activity_trend": 0.0,
    "email_ctr": 0.0,
    "cart_abandonment": 0.0,
    "dissatisfaction": 0.25,  # CSAT 4 of 5: most customers are content
    "detraction": 0.3,  # NPS 7: a passive
    "negative_sentiment": 0.4,  # slightly positive text
}

FeatureVector = dict[str, float]

# Window counters of input events are named "<topic>.<type>".
_EVENT_COUNTERS: Final = frozenset(
    f"{topic}.{kind}"
    for topic, kinds in (
        ("clickstream", ClickType),
        ("purchases", PurchaseType),
        ("support", SupportType),
    )
    for kind in get_args(kinds)
)


def _log_scaled(value: float, reference: float) -> float:
    """``log1p(value) / log1p(reference)``, capped at 1."""
    return min(math.log1p(max(value, 0.0)) / math.log1p(reference), 1.0)


def _capped(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _recent_events(buckets: Mapping[str, Mapping[str, float]], today: int) -> tuple[float, float]:
    """Input events in the day buckets of the last 7 and the last 30 days up to ``today``."""
    week: float = 0
    month: float = 0
    counters = _EVENT_COUNTERS
    for key, bucket in buckets.items():
        age = today - int(key)
        if 0 <= age < 30:
            # A bucket holds a handful of counters: a loop beats a set intersection.
            events: float = 0
            for name, n in bucket.items():
                if name in counters:
                    events += n
            month += events
            if age < 7:
                week += events
    return week, month


def feature_vector(profile: Profile, config: ProfileConfig, as_of_ms: int) -> FeatureVector:
    """The customer's model features as of ``as_of_ms`` (event time), rounded to 4 digits.

    Parameters
    ----------
    profile
        The customer's state (:func:`models.profile.apply_event`).
    config
        The profile settings (sessions still open count as if ended now).
    as_of_ms
        The moment the customer is described at; never before their last event.

    Called at every decision and every moment of every customer, so written
    for speed: one pass over the day buckets for both activity windows, and
    each feature rounded as it is computed.
    """
    totals = profile["totals"]
    lifetime = profile["lifetime"]
    last_seen = profile["last_seen_ms"]
    as_of = max(as_of_ms, last_seen or as_of_ms)
    tenure_days = (as_of - (profile["first_seen_ms"] or as_of)) / DAY_MS
    per_month = 30.0 / max(tenure_days, 30.0)
    orders = totals.get("orders", 0)
    open_sessions = profile["sessions"]
    sessions = totals.get("sessions", 0) + len(open_sessions)
    today = as_of // DAY_MS
    buckets = profile["buckets"]
    events_7d, events_30d = _recent_events(buckets, today)
    # Carts decided by as_of count whether or not the worker has finalised
    # them yet (that depends on its input watermark, not on the data).
    adds = profile["cart_adds"]
    decided: list[tuple[int, bool]] = []
    if adds:
        decided, _ = cart_episodes(adds, profile["recent_orders_ms"], config.cart_timeout_ms, as_of)
    abandoned = totals.get("carts_abandoned", 0) + sum(1 for _, ok in decided if not ok)
    carts = totals.get("carts_converted", 0) + totals.get("carts_abandoned", 0) + len(decided)
    opens = lifetime.get("clickstream.email_open", 0)
    csat_n = lifetime.get("support.csat_response", 0)
    texts = totals.get("sentiment_texts", 0)
    last_order = profile["last_order_ms"]
    nps = profile["nps_last"]
    if sessions:
        pages = totals.get("session_pages", 0) + sum(s["pages"] for s in open_sessions)
        pages_per_session = _log_scaled(pages / sessions, 20)
    else:
        pages_per_session = MISSING["pages_per_session"]

    return {
        "tenure": round(_capped(tenure_days / 30), 4),
        "days_since_seen": round(_capped((as_of - (last_seen or as_of)) / DAY_MS / 60), 4),
        "days_since_order": (
            round(_capped((as_of - last_order) / DAY_MS / 90), 4) if last_order is not None else 1.0
        ),
        "has_ordered": 1.0 if orders else 0.0,
        "orders_per_month": round(_log_scaled(orders * per_month, 8), 4),
        "aov": (
            round(_log_scaled(net_revenue(totals) / orders, 1000), 4) if orders else MISSING["aov"]
        ),
        "discount_share": (
            round(float(totals.get("discounted_orders", 0) / orders), 4)
            if orders
            else MISSING["discount_share"]
        ),
        "refund_share": (
            round(_capped(totals.get("refunds", 0) / orders), 4)
            if orders
            else MISSING["refund_share"]
        ),
        "sessions_per_month": round(_log_scaled(sessions * per_month, 30), 4),
        "pages_per_session": round(float(pages_per_session), 4),
        "activity_trend": (
            round(_capped(events_7d / (events_30d * 7 / 30) / 2), 4)
            if events_30d
            else MISSING["activity_trend"]
        ),
        "email_ctr": (
            round(_capped(lifetime.get("clickstream.email_click", 0) / opens), 4)
            if opens
            else MISSING["email_ctr"]
        ),
        "cart_abandonment": (
            round(float(abandoned / carts), 4) if carts else MISSING["cart_abandonment"]
        ),
        "tickets_per_month": round(
            _log_scaled(lifetime.get("support.ticket_opened", 0) * per_month, 5), 4
        ),
        "complaints_per_month": round(
            _log_scaled(lifetime.get("support.complaint", 0) * per_month, 3), 4
        ),
        "dissatisfaction": (
            round(_capped((5 - totals.get("csat_sum", 0) / csat_n) / 4), 4)
            if csat_n
            else MISSING["dissatisfaction"]
        ),
        "detraction": (
            round(_capped((10 - nps) / 10), 4) if nps is not None else MISSING["detraction"]
        ),
        "negative_sentiment": (
            round(_capped((1 - totals.get("sentiment_sum", 0) / texts) / 2), 4)
            if texts
            else MISSING["negative_sentiment"]
        ),
        "open_tickets": round(_capped(len(profile["open_tickets"]) / 3), 4),
    }
