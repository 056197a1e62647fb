"""Every simulated customer's profile against an independent recomputation
from that customer's raw events (no code shared with models.profile)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time
from streams.offline import evaluate
from streams.settings import Settings

DAY = 86_400_000


@pytest.fixture(scope="module")
def history() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    events, _ = simulate(
        SimConfig(customers=150, days=45, seed=2024, start=datetime(2026, 2, 1, tzinfo=UTC))
    )
    run = evaluate(events, Settings(_env_file=None))
    return events, {p["customer_id"]: p for p in run.summaries()}


def by_customer(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    alias = {e["anonymous_id"]: e["customer_id"] for e in events if e["type"] == "identify"}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] == "identify":
            continue
        customer = e.get("customer_id") or alias.get(e.get("anonymous_id", ""))
        if customer:
            out[customer].append(dict(e, ts_ms=parse_event_time(e["ts"])))
    return out


def test_profiles_match_an_independent_recomputation(
    history: tuple[list[dict[str, Any]], dict[str, dict[str, Any]]],
) -> None:
    events, profiles = history
    as_of = max(parse_event_time(e["ts"]) for e in events)
    grouped = by_customer(events)
    assert set(grouped) == set(profiles)
    for customer, own in grouped.items():
        p = profiles[customer]
        counts = Counter(f"{e['topic']}.{e['type']}" for e in own)
        assert p["event_counts"] == dict(counts), customer
        orders = [e for e in own if e["topic"] == "purchases" and e["type"] == "order"]
        refunds = [e for e in own if e["topic"] == "purchases" and e["type"] == "refund"]
        life = p["lifetime"]
        assert life["orders"] == len(orders)
        gross = sum(e["amount"] for e in orders)
        # The simulator refunds all or part of one of the customer's orders.
        net = gross - sum(e["amount"] for e in refunds)
        assert life["gross_revenue"] == pytest.approx(gross, abs=0.01)
        assert life["revenue"] == pytest.approx(net, abs=0.01)
        if orders:
            assert life["aov"] == pytest.approx(net / len(orders), abs=0.01)
            discounted = sum(1 for e in orders if e.get("discount", 0) > 0)
            assert life["discount_share"] == pytest.approx(discounted / len(orders), abs=1e-4)
            last = max(e["ts_ms"] for e in orders)
            assert p["purchases"]["recency_days"] == pytest.approx((as_of - last) / DAY, abs=1e-3)
        assert p["purchases"]["repeat_purchaser"] == (len(orders) >= 2)
        assert life["refunds"] == len(refunds)
        assert life["page_views"] == counts["clickstream.page_view"]
        opens, clicks = counts["clickstream.email_open"], counts["clickstream.email_click"]
        assert life["email_ctr"] == (round(clicks / opens, 4) if opens else None)
        assert p["first_seen_ms"] == min(e["ts_ms"] for e in own)
        assert p["last_seen_ms"] == max(e["ts_ms"] for e in own)
        recent = [e for e in own if as_of // DAY - 7 < e["ts_ms"] // DAY <= as_of // DAY]
        assert p["windows"]["7d"]["orders"] == sum(
            1 for e in recent if e["topic"] == "purchases" and e["type"] == "order"
        )
        assert p["windows"]["7d"]["product_views"] == sum(
            1 for e in recent if e["type"] == "product_view"
        )
        support = p["support"]
        csat = [e["score"] for e in own if e["type"] == "csat_response"]
        assert support["csat_mean"] == (round(sum(csat) / len(csat), 2) if csat else None)
        nps = sorted((e["ts_ms"], e["score"]) for e in own if e["type"] == "nps_response")
        if nps:
            score = nps[-1][1]
            assert support["nps_last"] == score
            expected = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
            assert support["nps_category"] == expected
        assert support["complaints"] == counts["support.complaint"]
        opened = {e["ticket_id"] for e in own if e["type"] == "ticket_opened"}
        resolved = {e["ticket_id"] for e in own if e["type"] == "ticket_resolved"}
        assert support["open_tickets"] == len(opened - resolved)


def test_personas_are_visible_in_the_profiles(
    history: tuple[list[dict[str, Any]], dict[str, dict[str, Any]]],
) -> None:
    _, profiles = history
    _, truth = simulate(
        SimConfig(customers=150, days=45, seed=2024, start=datetime(2026, 2, 1, tzinfo=UTC))
    )
    persona = {t.customer_id: t.persona for t in truth}

    def mean(name: str, pick: Any) -> float:
        values = [pick(p) for c, p in profiles.items() if persona[c] == name]
        values = [v for v in values if v is not None]
        return sum(values) / max(len(values), 1)

    discount = lambda p: p["lifetime"]["discount_share"]  # noqa: E731
    assert mean("bargain_hunter", discount) > mean("loyal_high_spender", discount) + 0.3
    orders = lambda p: p["lifetime"]["orders"]  # noqa: E731
    assert mean("window_shopper", orders) < mean("loyal_high_spender", orders) / 4
    sentiment = lambda p: p["support"]["sentiment_mean"]  # noqa: E731
    assert mean("unhappy_support_heavy", sentiment) < mean("loyal_high_spender", sentiment)
    alive = lambda p: p["value"]["p_alive"]  # noqa: E731
    assert mean("fading", alive) < mean("loyal_high_spender", alive) - 0.2
    rfm_r = lambda p: p["rfm"]["r"] if p["rfm"] else None  # noqa: E731
    assert mean("fading", rfm_r) < mean("loyal_high_spender", rfm_r)
