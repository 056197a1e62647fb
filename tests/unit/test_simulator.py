"""The event simulator: deterministic, realistic per persona, and honest about its truth."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.simulator import (
    MALFORMED_KINDS,
    PERSONAS,
    CustomerTruth,
    SimConfig,
    SimConfigError,
    read_events,
    read_truth,
    simulate,
    write_outputs,
)
from schemas.decode import partition_key
from schemas.event_time import parse_event_time

Event = dict[str, Any]

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
CONFIG = SimConfig(customers=300, days=60, seed=7, start=START)
START_MS = parse_event_time(START.isoformat())
END_MS = START_MS + CONFIG.days * DAY_MS

TYPES = {
    "clickstream": {
        "session_start",
        "page_view",
        "product_view",
        "search",
        "add_to_cart",
        "remove_from_cart",
        "checkout_start",
        "email_open",
        "email_click",
        "app_open",
        "identify",
    },
    "purchases": {"order", "refund"},
    "support": {
        "ticket_opened",
        "ticket_resolved",
        "csat_response",
        "nps_response",
        "ces_response",
        "complaint",
    },
}
CHANNELS = {
    "clickstream": {"web", "app", "email", "social", "store"},
    "purchases": {"web", "app", "store", "delivery", "click_and_collect"},
    "support": {"email", "chat", "phone", "social"},
}
REQUIRED_FIELDS = {
    "page_view": {"session_id", "page", "duration_ms"},
    "product_view": {"session_id", "product_id", "category", "duration_ms"},
    "add_to_cart": {"session_id", "product_id", "category"},
    "remove_from_cart": {"session_id", "product_id", "category"},
    "search": {"session_id", "query"},
    "email_open": {"session_id", "campaign"},
    "email_click": {"session_id", "campaign"},
    "identify": {"session_id", "anonymous_id", "customer_id"},
    "order": {"order_id", "amount", "currency", "items", "discount"},
    "refund": {"order_id", "amount", "currency", "items", "discount"},
    "ticket_opened": {"ticket_id", "priority", "text"},
    "ticket_resolved": {"ticket_id", "first_response_s", "resolution_s"},
    "csat_response": {"ticket_id", "score"},
    "ces_response": {"ticket_id", "score"},
    "nps_response": {"score"},
    "complaint": {"ticket_id", "text"},
}


@pytest.fixture(scope="module")
def run() -> tuple[list[Event], list[CustomerTruth]]:
    return simulate(CONFIG)


@pytest.fixture(scope="module")
def by_customer(run: tuple[list[Event], list[CustomerTruth]]) -> dict[str, list[Event]]:
    """Each customer's events in time order, logged-out browsing included."""
    events, _ = run
    anonymous = {e["anonymous_id"]: e["customer_id"] for e in events if e["type"] == "identify"}
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        customer_id = event.get("customer_id") or anonymous[event["anonymous_id"]]
        grouped[customer_id].append(event)
    return grouped


@pytest.fixture(scope="module")
def personas(run: tuple[list[Event], list[CustomerTruth]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for truth in run[1]:
        grouped[truth.persona].append(truth.customer_id)
    return grouped


def ts_ms(event: Event) -> int:
    return parse_event_time(event["ts"])


def of_type(events: list[Event], *types: str) -> list[Event]:
    return [e for e in events if e["type"] in types]


def per_customer(by_customer: dict[str, list[Event]], customers: list[str], *types: str) -> float:
    return sum(len(of_type(by_customer[c], *types)) for c in customers) / len(customers)


def test_same_config_gives_byte_identical_events_and_truth() -> None:
    config = SimConfig(customers=60, days=20, seed=3, malformed_rate=0.01)
    first, second = simulate(config), simulate(config)
    assert orjson.dumps(first[0], default=bytes.hex) == orjson.dumps(second[0], default=bytes.hex)
    assert first[1] == second[1]


def test_a_different_seed_gives_different_events() -> None:
    events_a, _ = simulate(SimConfig(customers=60, days=20, seed=3))
    events_b, _ = simulate(SimConfig(customers=60, days=20, seed=4))
    assert orjson.dumps(events_a) != orjson.dumps(events_b)


def test_events_are_sorted_by_time_then_id_and_inside_the_span(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    events, _ = run
    keys = [(ts_ms(e), e["event_id"]) for e in events]
    assert keys == sorted(keys)
    assert START_MS <= keys[0][0] and keys[-1][0] < END_MS
    assert len({e["event_id"] for e in events}) == len(events)


def test_every_event_follows_its_topic_contract(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    events, _ = run
    for event in events:
        role = event["topic"]
        assert event["schema_version"] == 1
        assert event["type"] in TYPES[role], event
        assert event["channel"] in CHANNELS[role], event
        assert event["ts"].endswith("Z")
        assert "customer_id" in event or ("anonymous_id" in event and role == "clickstream")
        assert REQUIRED_FIELDS.get(event["type"], set()) <= event.keys(), event
        if role == "clickstream":
            assert "session_id" in event
    scores = defaultdict(set)
    for event in of_type(events, "csat_response", "nps_response", "ces_response"):
        scores[event["type"]].add(event["score"])
    assert scores["csat_response"] <= set(range(1, 6))
    assert scores["nps_response"] <= set(range(11))
    assert scores["ces_response"] <= set(range(1, 8))


def test_event_volume_is_tens_of_events_per_customer(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    events, truth = run
    assert 40 <= len(events) / len(truth) <= 120


def test_every_persona_is_present_from_sixty_customers() -> None:
    _, truth = simulate(SimConfig(customers=60, days=10, seed=11))
    assert {t.persona for t in truth} == set(PERSONAS)


def test_persona_weights_choose_the_mix() -> None:
    config = SimConfig(customers=20, days=10, persona_weights={"window_shopper": 1.0})
    _, truth = simulate(config)
    assert {t.persona for t in truth} == {"window_shopper"}


def test_window_shoppers_buy_far_less_than_loyal_high_spenders(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    window = per_customer(by_customer, personas["window_shopper"], "order")
    loyal = per_customer(by_customer, personas["loyal_high_spender"], "order")
    assert loyal >= 5  # an order every ~5-10 days over 60 days
    assert window < 0.15 * loyal
    # …while browsing more than anyone.
    views = {p: per_customer(by_customer, personas[p], "product_view") for p in PERSONAS}
    assert max(views, key=views.__getitem__) == "window_shopper"


def test_loyal_high_spenders_have_the_highest_order_value(
    run: tuple[list[Event], list[CustomerTruth]], personas: dict[str, list[str]]
) -> None:
    persona_of = {t.customer_id: t.persona for t in run[1]}
    amounts: dict[str, list[float]] = defaultdict(list)
    for order in of_type(run[0], "order"):
        amounts[persona_of[order["customer_id"]]].append(order["amount"])
    aov = {p: sum(a) / len(a) for p, a in amounts.items()}
    assert max(aov, key=aov.__getitem__) == "loyal_high_spender"
    assert aov["loyal_high_spender"] > 2 * aov["bargain_hunter"]


def test_bargain_hunters_use_discounts_far_more_than_loyal_customers(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    def discount_share(persona: str) -> float:
        orders = [o for c in personas[persona] for o in of_type(by_customer[c], "order")]
        return sum(o["discount"] > 0 for o in orders) / len(orders)

    assert discount_share("bargain_hunter") >= 0.6
    assert discount_share("loyal_high_spender") <= 0.2


def test_bargain_hunters_respond_to_email_campaigns(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    bargain = per_customer(by_customer, personas["bargain_hunter"], "email_click")
    loyal = per_customer(by_customer, personas["loyal_high_spender"], "email_click")
    assert bargain > 1.5 * loyal


def test_unhappy_customers_open_many_tickets_and_score_low(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    unhappy, loyal = personas["unhappy_support_heavy"], personas["loyal_high_spender"]
    assert per_customer(by_customer, unhappy, "ticket_opened") > 5 * per_customer(
        by_customer, loyal, "ticket_opened"
    )
    assert per_customer(by_customer, unhappy, "complaint") >= 1

    def mean_score(customers: list[str], type_: str) -> float:
        scores = [e["score"] for c in customers for e in of_type(by_customer[c], type_)]
        return sum(scores) / len(scores)

    assert mean_score(unhappy, "csat_response") < 2.5 < 4 < mean_score(loyal, "csat_response")
    assert mean_score(unhappy, "nps_response") <= 6 < 9 <= mean_score(loyal, "nps_response")


def test_unhappy_customers_get_slow_ticket_resolutions(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    def slow_share(persona: str) -> float:
        resolved = [
            e for c in personas[persona] for e in of_type(by_customer[c], "ticket_resolved")
        ]
        return sum(e["resolution_s"] > 72 * 3600 for e in resolved) / len(resolved)

    assert slow_share("unhappy_support_heavy") > slow_share("loyal_high_spender")


def test_fading_customers_stop_at_their_churn_time(
    run: tuple[list[Event], list[CustomerTruth]], by_customer: dict[str, list[Event]]
) -> None:
    fading = [t for t in run[1] if t.persona == "fading"]
    assert fading and all(t.churns for t in fading)
    silences = []
    for truth in fading:
        assert truth.churn_ts is not None
        churn_ms = parse_event_time(truth.churn_ts)
        assert START_MS < churn_ms < END_MS
        assert max(ts_ms(e) for e in by_customer[truth.customer_id]) == churn_ms
        silences.append(END_MS - churn_ms)
    # Long enough gone for the engine to notice.
    assert sorted(silences)[len(silences) // 2] > 20 * DAY_MS
    others = [t for t in run[1] if t.persona != "fading"]
    assert not any(t.churns or t.churn_ts for t in others)


def test_fading_customers_buy_early_then_less_and_less(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    fading = {t.customer_id for t in run[1] if t.persona == "fading"}
    orders_by_ten_days = Counter(
        (ts_ms(order) - START_MS) // (10 * DAY_MS)
        for order in of_type(run[0], "order")
        if order["customer_id"] in fading
    )
    first, second = orders_by_ten_days[0], orders_by_ten_days[1]
    later = sum(n for block, n in orders_by_ten_days.items() if block >= 2)
    assert first > 1.2 * second > 5 * later


def test_customers_who_do_not_churn_are_active_in_the_last_fifth(
    run: tuple[list[Event], list[CustomerTruth]], by_customer: dict[str, list[Event]]
) -> None:
    last_fifth = END_MS - (END_MS - START_MS) // 5
    staying = [t.customer_id for t in run[1] if not t.churns]
    active = [c for c in staying if max(ts_ms(e) for e in by_customer[c]) >= last_fifth]
    assert len(active) >= 0.9 * len(staying)


def test_new_customers_arrive_late_and_buy_soon(
    run: tuple[list[Event], list[CustomerTruth]], by_customer: dict[str, list[Event]]
) -> None:
    late = START_MS + int(0.75 * (END_MS - START_MS))
    new = [t for t in run[1] if t.persona == "new_customer"]
    buying_soon = 0
    for truth in new:
        assert truth.first_ts is not None
        first_ms = parse_event_time(truth.first_ts)
        assert first_ms >= late
        assert min(ts_ms(e) for e in by_customer[truth.customer_id]) == first_ms
        orders = of_type(by_customer[truth.customer_id], "order")
        buying_soon += bool(orders) and ts_ms(orders[0]) - first_ms <= 4 * DAY_MS
    assert buying_soon >= 0.9 * len(new)


def test_order_amount_is_items_minus_discount(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    purchases = of_type(run[0], "order", "refund")
    assert purchases
    for event in purchases:
        items_total = sum(item["qty"] * item["unit_price"] for item in event["items"])
        assert event["amount"] == pytest.approx(items_total - event["discount"], abs=0.005)
        assert event["amount"] > 0 and event["discount"] >= 0
        assert round(event["amount"], 2) == event["amount"]
        assert event["currency"].upper() == "EUR"
    currencies = Counter(e["currency"] for e in purchases)
    assert currencies["EUR"] > 10 * currencies["eur"] > 0


def test_refunds_refer_to_an_earlier_order_of_the_same_customer(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    orders: dict[str, Event] = {}
    refunds = 0
    for event in of_type(run[0], "order", "refund"):
        if event["type"] == "order":
            orders[event["order_id"]] = event
            continue
        refunds += 1
        order = orders[event["order_id"]]  # seen earlier in time order
        assert order["customer_id"] == event["customer_id"]
        assert ts_ms(order) < ts_ms(event)
        assert event["amount"] <= order["amount"]
        assert {i["sku"] for i in event["items"]} <= {i["sku"] for i in order["items"]}
    assert refunds > 0


def test_online_orders_close_a_funnel_of_their_items(
    by_customer: dict[str, list[Event]],
) -> None:
    checked = 0
    for events in by_customer.values():
        carted: set[str] = set()
        checkout = False
        for event in events:
            if event["type"] == "add_to_cart":
                carted.add(event["product_id"])
            elif event["type"] == "checkout_start":
                checkout = True
            elif event["type"] == "order" and event["channel"] != "store":
                assert checkout and {i["sku"] for i in event["items"]} <= carted
                checked += 1
    assert checked > 100


def test_carts_are_abandoned_as_well_as_bought(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    online_orders = [o for o in of_type(run[0], "order") if o["channel"] != "store"]
    carts = {e["session_id"] for e in of_type(run[0], "add_to_cart")}
    checkouts = of_type(run[0], "checkout_start")
    assert len(carts) > 1.5 * len(online_orders)
    assert len(checkouts) > 1.2 * len(online_orders)  # some checkouts never became orders


def test_feedback_text_carries_the_personas_sentiment(
    by_customer: dict[str, list[Event]], personas: dict[str, list[str]]
) -> None:
    negative_words = ("unacceptable", "terrible", "furious", "awful", "useless", "disappointed")
    negative_words += ("worst", "unhappy", "disgusting", "bad", "frustrating", "poor")

    def negative_share(persona: str) -> float:
        texts = [
            e["text"].lower()
            for c in personas[persona]
            for e in of_type(by_customer[c], "ticket_opened", "complaint", "nps_response")
            if "text" in e
        ]
        return sum(any(w in t for w in negative_words) for t in texts) / len(texts)

    assert negative_share("unhappy_support_heavy") > 0.9
    assert negative_share("loyal_high_spender") < 0.2


def test_some_customers_browse_logged_out_before_identifying(
    run: tuple[list[Event], list[CustomerTruth]],
) -> None:
    events, _ = run
    anonymous = [e for e in events if "customer_id" not in e]
    identifies = {e["anonymous_id"]: e for e in of_type(events, "identify")}
    assert anonymous
    for event in anonymous:
        identify = identifies[event["anonymous_id"]]
        assert ts_ms(event) < ts_ms(identify)
        assert event["session_id"] == identify["session_id"]
        assert partition_key(event) == event["anonymous_id"]
    # The identify is keyed like the browsing it closes, so both meet in one partition.
    assert all(partition_key(e) == e["anonymous_id"] for e in identifies.values())


def test_malformed_rate_yields_every_kind_evenly_after_a_good_event() -> None:
    events, _ = simulate(SimConfig(customers=30, days=10, seed=5, malformed_rate=0.1))
    bad = [(i, e) for i, e in enumerate(events) if "malformed" in e]
    kinds = Counter(e["malformed"] for _, e in bad)
    assert set(kinds) == set(MALFORMED_KINDS)
    assert max(kinds.values()) - min(kinds.values()) <= 1
    for index, record in bad:
        good = events[index - 1]
        assert "malformed" not in good
        assert isinstance(record["raw"], bytes)
        kind, raw, key = record["malformed"], record["raw"], record["key"]
        if kind == "not_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(raw)
        elif kind == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        elif kind == "not_object":
            assert not isinstance(orjson.loads(raw), dict)
        elif kind == "oversized":
            assert len(raw) > 64 * 1024  # past the default max_event_bytes
        else:
            payload = orjson.loads(raw)
            assert isinstance(payload, dict)
            check_bad_payload(kind, payload, key, good)


def check_bad_payload(kind: str, payload: Event, key: str | None, good: Event) -> None:
    if kind == "missing_field":
        lost_id = "customer_id" not in payload and "anonymous_id" not in payload
        assert lost_id or not {"ts", "type"} <= payload.keys()
    elif kind == "wrong_type":
        assert isinstance(payload["ts"], list) or payload.get("amount") == "abc"
    elif kind == "unknown_type":
        assert payload["type"] == "teleport"
    elif kind == "negative_amount":
        assert payload["type"] == "order" and payload["amount"] < 0
    elif kind == "absurd_amount":
        assert payload["amount"] >= 1e12
    elif kind == "future_time":
        assert payload["ts"].startswith("2999")
    elif kind == "ancient_time":
        assert payload["ts"].startswith("1985")
    elif kind == "missing_key":
        assert key is None and payload["type"] == good["type"]
    elif kind == "key_mismatch":
        assert key is not None and key != partition_key(good)
    if kind in ("negative_amount", "absurd_amount"):
        assert key == payload["customer_id"]
    elif kind not in ("missing_key", "key_mismatch"):
        assert key == partition_key(good)
    assert payload["event_id"] != good["event_id"]


def test_write_outputs_round_trips(tmp_path: Path) -> None:
    config = SimConfig(customers=40, days=15, seed=9, malformed_rate=0.05)
    written = write_outputs(config, tmp_path / "a")
    events, truth = simulate(config)
    assert written == (len(events), len(truth))
    assert list(read_events(tmp_path / "a" / "events.jsonl")) == events
    assert read_truth(tmp_path / "a" / "truth.jsonl") == truth
    lines = (tmp_path / "a" / "truth.jsonl").read_bytes().splitlines()
    assert set(orjson.loads(lines[0])) == {
        "customer_id",
        "persona",
        "churns",
        "churn_ts",
        "first_ts",
    }
    bad_line = next(
        orjson.loads(line)
        for line in (tmp_path / "a" / "events.jsonl").read_bytes().splitlines()
        if b'"malformed"' in line
    )
    assert set(bad_line) == {"topic", "malformed", "raw_b64", "key"}
    assert base64.b64decode(bad_line["raw_b64"])
    write_outputs(config, tmp_path / "b")
    for name in ("events.jsonl", "truth.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_span_and_start_are_honoured() -> None:
    start = datetime(2025, 6, 1, 12, tzinfo=UTC)
    events, _ = simulate(SimConfig(customers=20, days=3, start=start))
    times = [parse_event_time(e["ts"]) for e in events]
    start_ms = parse_event_time(start.isoformat())
    assert start_ms <= min(times) and max(times) < start_ms + 3 * DAY_MS


@pytest.mark.parametrize(
    "config",
    [
        SimConfig(customers=-1),
        SimConfig(days=0),
        SimConfig(malformed_rate=1.5),
        SimConfig(start=datetime(2026, 1, 1)),  # noqa: DTZ001 - naive on purpose
        SimConfig(persona_weights={"time_traveller": 1.0}),
        SimConfig(persona_weights={"fading": 0.0}),
    ],
)
def test_inconsistent_configs_are_rejected(config: SimConfig) -> None:
    with pytest.raises(SimConfigError):
        simulate(config)


def test_zero_customers_give_nothing() -> None:
    assert simulate(SimConfig(customers=0)) == ([], [])
