"""Refunds net out: revenue, AOV, RFM monetary, CLV, value tier and VIP follow net revenue."""

from __future__ import annotations

from typing import Any

import pytest

from models.pipeline import rfm_values
from models.profile import DAY_MS, ProfileConfig, apply_event, event, net_revenue
from models.profile_summary import summarise
from models.state import undeclared_keys
from streams.offline import evaluate
from streams.settings import Settings

CONFIG = ProfileConfig()
JAN_1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def purchase(type_: str, day: float, event_id: str, order_id: str, amount: float) -> dict[str, Any]:
    return event("purchases", type_, int(day * DAY_MS), event_id, order_id=order_id, amount=amount)


def fold(events: list[dict[str, Any]]) -> Any:
    state = None
    for e in events:
        state, _ = apply_event(state, e, CONFIG)
    return state


def test_partial_refunds_net_out_up_to_what_the_order_has_left() -> None:
    state = fold(
        [
            purchase("order", 10, "e1", "o1", 80.0),
            purchase("order", 11, "e2", "o2", 20.0),
            purchase("refund", 12, "e3", "o1", 30.0),  # part of o1
            purchase("refund", 13, "e4", "o1", 60.0),  # more than the 50 o1 has left
        ]
    )
    totals = state["totals"]
    assert (totals["revenue"], totals["refund_amount"], totals["refunds"]) == (100.0, 80.0, 2)
    assert net_revenue(totals) == 20.0
    assert totals["refunds_capped"] == 1
    assert summarise(state, CONFIG)["lifetime"]["refunds_capped"] == 1
    assert "refunds_unlinked" not in totals
    o1, o2 = state["recent_orders"]
    assert (o1["order_id"], o1["amount"], o1["refunded"]) == ("o1", 80.0, 80.0)
    assert (o2["order_id"], o2["refunded"]) == ("o2", 0.0)
    # Nothing left on o1: a third refund takes nothing more off.
    state, _ = apply_event(state, purchase("refund", 14, "e5", "o1", 5.0), CONFIG)
    assert net_revenue(state["totals"]) == 20.0
    assert undeclared_keys(state) == set()


def test_a_refund_of_an_unknown_order_still_nets_out_and_is_counted() -> None:
    state = fold(
        [purchase("order", 10, "e1", "o1", 80.0), purchase("refund", 12, "e2", "o-old", 25.0)]
    )
    assert net_revenue(state["totals"]) == 55.0
    assert state["totals"]["refunds_unlinked"] == 1
    summary = summarise(state, CONFIG)
    assert summary["lifetime"]["refunds_unlinked"] == 1
    assert state["recent_orders"][0]["refunded"] == 0.0


def test_a_redelivered_refund_nets_out_once() -> None:
    refund = purchase("refund", 12, "e2", "o1", 30.0)
    state = fold([purchase("order", 10, "e1", "o1", 80.0), refund, dict(refund)])
    assert net_revenue(state["totals"]) == 50.0


def test_the_summary_shows_net_revenue_beside_gross_in_lifetime_and_windows() -> None:
    state = fold(
        [
            purchase("order", 1, "e1", "o1", 50.0),  # outside the 7-day window at day 20
            purchase("order", 18, "e2", "o2", 40.0),
            purchase("order", 19, "e3", "o3", 60.0),
            purchase("refund", 20, "e4", "o3", 60.0),
            purchase("refund", 20, "e5", "o1", 10.0),
        ]
    )
    summary = summarise(state, CONFIG)
    life = summary["lifetime"]
    assert (life["gross_revenue"], life["revenue"], life["refund_amount"]) == (150.0, 80.0, 70.0)
    assert life["aov"] == pytest.approx(80.0 / 3, abs=0.005)  # net revenue per order
    week = summary["windows"]["7d"]
    # The window nets the refunds made in it: o1's refund too, though o1 is older.
    assert (week["gross_revenue"], week["revenue"], week["orders"]) == (100.0, 30.0, 2)
    # CLV from net AOV: 3 orders over the 30-day tenure floor, a year, 3 years.
    assert summary["value"]["clv_simple"] == round(life["aov"] * 3 / 30 * 365 * 3, 2)
    orders = summary["purchases"]["recent_orders"]
    assert [(o["order_id"], o["refunded"]) for o in orders] == [
        ("o3", 60.0),
        ("o2", 0.0),
        ("o1", 10.0),
    ]
    values = rfm_values(state)
    assert values is not None and values.revenue == 80.0


def order_line(customer: str, day: float, n: int, amount: float, type_: str = "order") -> dict:
    return {
        "topic": "purchases",
        "event_id": f"{customer}-{type_}-{n}",
        "customer_id": customer,
        "ts": JAN_1 + int(day * DAY_MS),
        "type": type_,
        "order_id": f"{customer}-o{n}",
        "amount": amount,
        "currency": "EUR",
    }


def others() -> list[dict[str, Any]]:
    # 39 customers buy for 20..58 EUR on day 0.
    return [order_line(f"c{i:02d}", 0.5 + i / 100, 1, 20.0 + i) for i in range(39)]


def later() -> list[dict[str, Any]]:
    # Others' later orders carry the input watermark past the customer's last event.
    return [order_line(f"c{i:02d}", 4.0 + i / 100, 2, 25.0) for i in range(3)]


def value_tiers(run: Any, customer: str) -> list[tuple[str | None, str, int]]:
    return [
        (c["from_segment"], c["to_segment"], (c["ts"] - JAN_1) // DAY_MS)
        for c in run.outputs.changes
        if c["customer_id"] == customer and c["dimension"] == "value_tier"
    ]


def vip_triggers(run: Any, customer: str) -> list[int]:
    return [
        (t["ts"] - JAN_1) // DAY_MS
        for t in run.outputs.triggers
        if t["customer_id"] == customer and t["kind"] == "vip"
    ]


def profile_of(run: Any, customer: str) -> dict[str, Any]:
    return next(p for p in run.summaries() if p["customer_id"] == customer)


SETTINGS = Settings(_env_file=None, input_partitions=1)


def test_a_full_refund_of_the_only_order_brings_revenue_monetary_and_tier_down() -> None:
    events = [
        *others(),
        order_line("whale", 1.0, 1, 5_000.0),
        order_line("whale", 3.0, 1, 5_000.0, type_="refund"),
        *later(),
    ]
    run = evaluate(events, SETTINGS)
    assert run.rejected == {}
    assert value_tiers(run, "whale") == [(None, "top_5", 1), ("top_5", "rest", 3)]
    whale = profile_of(run, "whale")
    assert (whale["lifetime"]["revenue"], whale["lifetime"]["gross_revenue"]) == (0.0, 5_000.0)
    assert whale["lifetime"]["orders"] == 1
    assert whale["segments"]["value_tier"]["value"] == "rest"
    assert whale["rfm"]["m"] == 1  # the lowest monetary score: nothing kept
    assert whale["value"]["clv_simple"] == 0.0


def test_without_the_refund_the_big_spender_stays_top_5_with_the_highest_monetary() -> None:
    run = evaluate([*others(), order_line("whale", 1.0, 1, 5_000.0), *later()], SETTINGS)
    whale = profile_of(run, "whale")
    assert whale["segments"]["value_tier"]["value"] == "top_5"
    assert whale["rfm"]["m"] == 5
    assert whale["lifetime"]["revenue"] == whale["lifetime"]["gross_revenue"] == 5_000.0


def test_vip_follows_net_revenue() -> None:
    # A small first order, a big one that makes a VIP, then the big one refunded.
    events = [
        *others(),
        order_line("whale", 0.2, 1, 30.0),
        order_line("whale", 1.5, 2, 5_000.0),
        order_line("whale", 3.0, 2, 5_000.0, type_="refund"),
        *later(),
    ]
    run = evaluate(events, SETTINGS)
    assert vip_triggers(run, "whale") == [1]
    assert value_tiers(run, "whale") == [
        (None, "rest", 0),
        ("rest", "top_5", 1),
        ("top_5", "rest", 3),
    ]
    whale = profile_of(run, "whale")
    assert (whale["lifetime"]["revenue"], whale["lifetime"]["gross_revenue"]) == (30.0, 5_030.0)
