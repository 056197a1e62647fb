"""The metrics users read, computed from a profile's state as of a moment.

``summarise(profile, config, as_of_ms, population)`` is what ``GET
/customers/{id}`` returns and what ``segstream evaluate`` writes, so live and
offline profiles are the same function of the same state. ``as_of_ms`` is
event time: the worker's watermark, or the evaluation cutoff.

Metric definitions follow ``docs/definitions.md``; rates are ``None`` when their
denominator is zero rather than a misleading 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.clv import (
    ClvError,
    expected_purchases,
    median_days_to_next_purchase,
    p_alive,
    simple_clv,
)
from models.profile import (
    DAY_MS,
    Profile,
    ProfileConfig,
    cart_episodes,
    net_revenue,
    session_converted,
    window_totals,
)
from models.quantiles import RfmValues, rfm_scores
from schemas.errors import SegstreamError

ENGAGEMENT_COUNTERS = {
    "page_views": "clickstream.page_view",
    "product_views": "clickstream.product_view",
    "searches": "clickstream.search",
    "cart_adds": "clickstream.add_to_cart",
    "cart_removes": "clickstream.remove_from_cart",
    "checkouts": "clickstream.checkout_start",
    "email_opens": "clickstream.email_open",
    "email_clicks": "clickstream.email_click",
    "app_opens": "clickstream.app_open",
    "tickets_opened": "support.ticket_opened",
    "tickets_resolved": "support.ticket_resolved",
    "complaints": "support.complaint",
}


@dataclass(frozen=True, slots=True)
class ValueConfig:
    """Settings of the value metrics."""

    expected_lifespan_days: float = 3 * 365.0
    clv_horizon_days: float = 90.0


@dataclass(frozen=True, slots=True)
class Population:
    """What is known about the whole customer base: RFM sketches and BG/NBD state."""

    rfm: Mapping[str, Any] | None = None
    bgnbd: Mapping[str, Any] | None = None


def ratio(numerator: float, denominator: float, digits: int = 4) -> float | None:
    """``numerator / denominator`` rounded, or ``None`` when undefined.

    >>> ratio(1, 4), ratio(3, 0)
    (0.25, None)
    """
    return round(numerator / denominator, digits) if denominator else None


def nps_category(score: float | None) -> str | None:
    """Promoter (9–10), passive (7–8) or detractor (0–6).

    >>> [nps_category(s) for s in (10, 7, 6, None)]
    ['promoter', 'passive', 'detractor', None]
    """
    if score is None:
        return None
    if score >= 9:
        return "promoter"
    return "passive" if score >= 7 else "detractor"


def _with_open_episodes(
    profile: Profile, config: ProfileConfig, totals: dict[str, float], days: int | None, as_of: int
) -> dict[str, float]:
    # Sessions and carts still open count provisionally, as if they ended now.
    merged = dict(totals)
    today = as_of // DAY_MS
    for session in profile["sessions"]:
        if days is not None and not today - days < session["start_ms"] // DAY_MS <= today:
            continue
        merged["sessions"] = merged.get("sessions", 0) + 1
        merged["session_ms"] = (
            merged.get("session_ms", 0) + session["last_ms"] - session["start_ms"]
        )
        merged["session_pages"] = merged.get("session_pages", 0) + session["pages"]
        if session_converted(profile, session, config):
            merged["sessions_converted"] = merged.get("sessions_converted", 0) + 1
    decided, still_open = cart_episodes(
        profile["cart_adds"], profile["recent_orders_ms"], config.cart_timeout_ms, as_of
    )
    carts: list[tuple[int, str | None]] = [
        (start, "carts_converted" if ok else "carts_abandoned") for start, ok in decided
    ]
    carts += [(start, None) for start in still_open[:1]]  # one open cart at most
    for start, outcome in carts:
        if days is None or today - days < start // DAY_MS <= today:
            merged["carts_started"] = merged.get("carts_started", 0) + 1
            if outcome is not None:
                merged[outcome] = merged.get(outcome, 0) + 1
    return merged


def _activity(totals: Mapping[str, float]) -> dict[str, Any]:
    sessions = totals.get("sessions", 0)
    orders = totals.get("orders", 0)
    revenue = net_revenue(totals)
    carts_done = totals.get("carts_converted", 0) + totals.get("carts_abandoned", 0)
    channels = {k.split(".", 1)[1]: int(v) for k, v in totals.items() if k.startswith("channel.")}
    categories = {
        k.split(".", 1)[1]: int(v) for k, v in totals.items() if k.startswith("category.")
    }
    out: dict[str, Any] = {
        name: int(totals.get(key, 0)) for name, key in ENGAGEMENT_COUNTERS.items()
    }
    out.update(
        sessions=int(sessions),
        session_duration_ms_total=int(totals.get("session_ms", 0)),
        session_duration_ms_mean=ratio(totals.get("session_ms", 0), sessions, 1),
        pages_per_session=ratio(totals.get("session_pages", 0), sessions, 2),
        email_ctr=ratio(
            totals.get("clickstream.email_click", 0), totals.get("clickstream.email_open", 0)
        ),
        conversion_rate=ratio(totals.get("sessions_converted", 0), sessions),
        carts_started=int(totals.get("carts_started", 0)),
        carts_abandoned=int(totals.get("carts_abandoned", 0)),
        cart_abandonment_rate=ratio(totals.get("carts_abandoned", 0), carts_done),
        orders=int(orders),
        revenue=round(revenue, 2),
        gross_revenue=round(totals.get("revenue", 0.0), 2),
        aov=ratio(revenue, orders, 2),
        refunds=int(totals.get("refunds", 0)),
        refund_amount=round(totals.get("refund_amount", 0.0), 2),
        refunds_unlinked=int(totals.get("refunds_unlinked", 0)),
        refunds_capped=int(totals.get("refunds_capped", 0)),
        discount_share=ratio(totals.get("discounted_orders", 0), orders),
        sla_breaches=int(totals.get("sla_breaches", 0)),
        channels=channels,
        categories=categories,
    )
    return out


def _preferred(counts: Mapping[str, int]) -> str | None:
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))


def summarise(
    profile: Profile,
    config: ProfileConfig,
    as_of_ms: int | None = None,
    population: Population | None = None,
    value: ValueConfig | None = None,
) -> dict[str, Any]:
    """Every per-customer metric of ``docs/definitions.md`` that the profile supports.

    Parameters
    ----------
    profile
        The customer's state from :func:`models.profile.apply_event`.
    config
        The profile settings the state was built with.
    as_of_ms
        Event time the metrics are computed for (default: the customer's
        own last event).
    population
        RFM sketches and BG/NBD parameters of the customer base, for RFM
        scores and model-based CLV; omitted, those fields are ``None``.
    value
        Lifespan and horizon of the value metrics.
    """
    value = value or ValueConfig()
    last_seen = profile["last_seen_ms"]
    if last_seen is None:
        raise SegstreamError("a profile with no event has nothing to summarise")
    as_of = max(as_of_ms if as_of_ms is not None else last_seen, last_seen)
    lifetime = _activity(_with_open_episodes(profile, config, profile["totals"], None, as_of))
    windows = {
        f"{days}d": _activity(
            _with_open_episodes(profile, config, window_totals(profile, days, as_of), days, as_of)
        )
        for days in config.windows_days
    }
    totals = profile["totals"]
    orders = int(totals.get("orders", 0))
    first_order, last_order = profile["first_order_ms"], profile["last_order_ms"]
    tenure_days = (as_of - first_order) / DAY_MS if first_order is not None else None
    purchase = {
        "first_order_ms": first_order,
        "last_order_ms": last_order,
        "recency_days": round((as_of - last_order) / DAY_MS, 3) if last_order is not None else None,
        "mean_days_between_orders": (
            round((last_order - first_order) / DAY_MS / (orders - 1), 2)
            if orders >= 2 and first_order is not None and last_order is not None
            else None
        ),
        "repeat_purchaser": orders >= 2,
        "favourite_categories": sorted(
            profile["purchase_categories"], key=lambda c: (-profile["purchase_categories"][c], c)
        )[:3],
        # newest first: base-currency amount and refunded, and what was paid
        "recent_orders": [dict(order) for order in reversed(profile.get("recent_orders", []))],
    }
    rfm = None
    expected = alive = year = median_days = None
    if population is not None and population.rfm is not None and last_order is not None:
        r, f, m = rfm_scores(
            population.rfm,
            RfmValues(last_order // DAY_MS, orders, net_revenue(totals)),
        )
        rfm = {"r": r, "f": f, "m": m, "score": f"{r}{f}{m}"}
    if (
        population is not None
        and population.bgnbd is not None
        and first_order is not None
        and last_order is not None
    ):
        x, t_x, big_t = bgnbd_summary(profile, as_of)
        expected = round(
            expected_purchases(population.bgnbd, x, t_x, big_t, value.clv_horizon_days), 4
        )
        alive = round(p_alive(population.bgnbd, x, t_x, big_t), 4)
        year = round(expected_purchases(population.bgnbd, x, t_x, big_t, 365.0), 4)
        median_days = round(median_days_to_next_purchase(population.bgnbd, x, t_x, big_t), 1)
    aov = lifetime["aov"]
    per_year = orders / max(tenure_days or 0.0, 30.0) * 365 if orders else 0.0
    value_metrics = {
        "clv_simple": (
            round(simple_clv(aov, per_year, value.expected_lifespan_days / 365), 2)
            if aov is not None
            else None
        ),
        f"expected_purchases_{int(value.clv_horizon_days)}d": expected,
        "clv_model": round(expected * aov, 2) if expected is not None and aov is not None else None,
        "p_alive": alive,
        # A year ahead, and the next order: expected orders and value in 365
        # days; the median wait for the next order if still active, and its
        # date when the customer is more likely active than gone (else null).
        "expected_purchases_365d": year,
        "clv_365d": round(year * aov, 2) if year is not None and aov is not None else None,
        "next_order_median_days_if_active": median_days,
        "next_order_expected_ms": (
            as_of + int(median_days * DAY_MS)
            if median_days is not None and alive is not None and alive >= 0.5
            else None
        ),
    }
    support = _support(profile, config, as_of)
    return {
        "as_of_ms": as_of,
        "first_seen_ms": profile["first_seen_ms"],
        "last_seen_ms": last_seen,
        "days_since_last_seen": round((as_of - last_seen) / DAY_MS, 3),
        "events": int(sum(profile["lifetime"].values())),
        "event_counts": dict(sorted(profile["lifetime"].items())),
        # track events by name (the 50 most frequent are kept)
        "custom_event_counts": dict(sorted(profile.get("custom_events", {}).items())),
        "late_events": profile["late_events"],
        "preferred_channel": _preferred(profile["channels"]),
        "favourite_browse_categories": sorted(
            profile["categories"], key=lambda c: (-profile["categories"][c], c)
        )[:3],
        "lifetime": lifetime,
        "windows": windows,
        "purchases": purchase,
        "rfm": rfm,
        "value": value_metrics,
        "support": support,
    }


def bgnbd_summary(profile: Profile, as_of_ms: int) -> tuple[int, float, float]:
    """BG/NBD inputs in days: repeat purchases ``x``, ``t_x``, ``T`` (from first order)."""
    first, last = profile["first_order_ms"], profile["last_order_ms"]
    if first is None or last is None:
        raise ClvError("BG/NBD inputs need at least one order")
    x = max(int(profile["totals"].get("orders", 0)) - 1, 0)
    return x, (last - first) / DAY_MS, max((as_of_ms - first) / DAY_MS, (last - first) / DAY_MS)


def _support(profile: Profile, config: ProfileConfig, as_of: int) -> dict[str, Any]:
    totals = profile["totals"]
    overdue = sum(
        1
        for opened, priority in profile["open_tickets"].values()
        if as_of - opened > config.sla_resolution_s.get(priority, 259200) * 1000
    )
    csat_n = profile["lifetime"].get("support.csat_response", 0)
    ces_n = profile["lifetime"].get("support.ces_response", 0)
    return {
        "open_tickets": len(profile["open_tickets"]),
        "open_tickets_past_sla": overdue,
        "first_response_s_mean": ratio(
            totals.get("first_response_s", 0), totals.get("first_responses", 0), 1
        ),
        "resolution_s_mean": ratio(totals.get("resolution_s", 0), totals.get("resolutions", 0), 1),
        "sla_breaches": int(totals.get("sla_breaches", 0)),
        "csat_last": profile["csat_last"],
        "csat_mean": ratio(totals.get("csat_sum", 0), csat_n, 2),
        "nps_last": profile["nps_last"],
        "nps_category": nps_category(profile["nps_last"]),
        "ces_last": profile["ces_last"],
        "ces_mean": ratio(totals.get("ces_sum", 0), ces_n, 2),
        "complaints": int(profile["lifetime"].get("support.complaint", 0)),
        "sentiment_last": profile["sentiment_last"],
        "sentiment_mean": ratio(
            totals.get("sentiment_sum", 0), totals.get("sentiment_texts", 0), 3
        ),
        "negative_texts": int(totals.get("negative_texts", 0)),
    }
