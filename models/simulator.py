"""Simulated customers and the events they send, with the ground truth behind them.

Each simulated customer has one of six behavioural :data:`PERSONAS` and lives
through ``days`` days of sessions (view → cart → checkout → order funnels,
abandoned carts), email campaigns, orders and refunds, support tickets and
surveys. Every event is a dict exactly as it appears on its Kafka topic, plus a
``"topic"`` field naming the input role (``clickstream``, ``purchases`` or
``support``). The truth (persona, whether and when the customer churns) is
returned beside the events so segment and churn logic can be scored against it.

The simulator is pure: no Faust, no Kafka, no wall clock, no global random
state. The same :class:`SimConfig` always yields the same events, byte for byte.

>>> events, truth = simulate(SimConfig(customers=12, days=14, seed=1))
>>> len(truth), sorted({t.persona for t in truth}) == sorted(PERSONAS)
(12, True)
>>> first = events[0]
>>> first["schema_version"], first["event_id"], first["topic"] in ROLES
(1, 'ev-000000001', True)
"""

from __future__ import annotations

import base64
import functools
import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args

import orjson

from schemas.decode import partition_key
from schemas.errors import ConfigError

# S311 is silenced where a generator is created: these numbers drive a simulation,
# they protect nothing.

Persona = Literal[
    "loyal_high_spender",
    "bargain_hunter",
    "window_shopper",
    "new_customer",
    "fading",
    "unhappy_support_heavy",
]
Role = Literal["clickstream", "purchases", "support"]
PurchaseProcess = Literal["planted", "realistic"]
MalformedKind = Literal[
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "negative_amount",
    "absurd_amount",
    "future_time",
    "ancient_time",
    "oversized",
    "invalid_utf8",
    "missing_key",
    "key_mismatch",
]
Event = dict[str, Any]
_T = TypeVar("_T")

PERSONAS: Final[tuple[Persona, ...]] = get_args(Persona)
ROLES: Final[tuple[Role, ...]] = get_args(Role)
MALFORMED_KINDS: Final[tuple[MalformedKind, ...]] = get_args(MalformedKind)
CATEGORIES: Final = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "books",
    "grocery",
    "toys",
)
SCHEMA_VERSION: Final = 1
# Past the default 64 KiB limit without bloating files and memory.
OVERSIZED_BYTES: Final = 128 * 1024

DEFAULT_PERSONA_WEIGHTS: Final[Mapping[str, float]] = {
    "loyal_high_spender": 0.15,
    "bargain_hunter": 0.20,
    "window_shopper": 0.22,
    "new_customer": 0.13,
    "fading": 0.18,
    "unhappy_support_heavy": 0.12,
}

_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Share of customers whose first session starts logged out (anonymous_id only).
_ANONYMOUS_SHARE: Final = 0.05
# Lower-case currency codes exercise the decoder's normalisation.
_LOWERCASE_CURRENCY_SHARE: Final = 0.03

# Relative activity by UTC hour: quiet nights, a lunch bump, an evening peak.
_HOUR_CUM_WEIGHTS: Final = tuple(
    accumulate((1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 5, 5, 5, 6, 7, 8, 9, 9, 8, 5, 2))
)
_HOURS: Final = tuple(range(24))
# Shop opening hours, for in-store orders.
_STORE_HOUR_CUM_WEIGHTS: Final = tuple(
    accumulate((0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 4, 5, 4, 4, 4, 5, 6, 5, 3, 0, 0, 0, 0))
)

# Service-level targets the simulator aims at (first response, resolution) in
# seconds per priority; "slow" tickets overshoot them. The engine's own SLA
# thresholds are settings; these only shape the simulated durations.
_SLA_S: Final[Mapping[str, tuple[int, int]]] = {
    "urgent": (900, 4 * 3600),
    "high": (3600, 24 * 3600),
    "normal": (4 * 3600, 72 * 3600),
    "low": (24 * 3600, 120 * 3600),
}

_CATEGORY_PRICE_EUR: Final[Mapping[str, tuple[float, float]]] = {
    "electronics": (25.0, 900.0),
    "fashion": (12.0, 220.0),
    "home": (8.0, 400.0),
    "beauty": (4.0, 90.0),
    "sports": (10.0, 260.0),
    "books": (5.0, 45.0),
    "grocery": (2.0, 35.0),
    "toys": (5.0, 130.0),
}
_PRODUCTS_PER_CATEGORY: Final = 40

_SEARCHES: Final[Mapping[str, tuple[str, ...]]] = {
    "electronics": ("wireless headphones", "usb-c charger", "4k tv", "laptop stand", "smartwatch"),
    "fashion": ("winter coat", "running shoes", "linen shirt", "leather belt", "rain jacket"),
    "home": ("desk lamp", "bed linen", "coffee maker", "storage boxes", "throw pillow"),
    "beauty": ("face cream", "vitamin c serum", "shampoo", "sunscreen spf 50", "perfume"),
    "sports": ("yoga mat", "dumbbells", "cycling gloves", "tennis racket", "water bottle"),
    "books": ("crime novel", "cookbook", "sci-fi bestseller", "children's book", "biography"),
    "grocery": ("olive oil", "organic coffee", "dark chocolate", "green tea", "pasta"),
    "toys": ("lego set", "board game", "puzzle 1000", "plush toy", "remote control car"),
}
_PAGES: Final = ("home", "deals", "new-arrivals", "account", "help", "stores", "wishlist")

_CAMPAIGN_THEMES: Final[tuple[tuple[str, bool], ...]] = (
    ("flash-sale", True),
    ("weekend-deals", True),
    ("clearance", True),
    ("member-discount", True),
    ("new-arrivals", False),
    ("style-guide", False),
    ("back-in-stock", False),
    ("newsletter", False),
)

_POSITIVE_TICKET: Final = (
    "Quick question about my delivery date, thanks for the great service as always!",
    "Could you help me change my delivery address? Love how easy your shop is to use.",
    "I'd like to add gift wrapping to my order, your team has always been wonderful.",
    "Just checking on my order status, really happy with everything so far.",
    "Can I swap the size on my order? Thanks, you are always so helpful.",
)
_NEGATIVE_TICKET: Final = (
    "My order arrived broken and nobody has answered me. This is unacceptable.",
    "Third time my delivery is late. Terrible service, I am very disappointed.",
    "I was charged twice and I am furious that nobody fixes it.",
    "The product is awful and stopped working after two days. I want my money back.",
    "Your support is useless, I have been waiting for days without any answer.",
)
_NEGATIVE_COMPLAINT: Final = (
    "Formal complaint: the worst customer service I have ever experienced.",
    "I am extremely unhappy, the refund still has not arrived and nobody cares.",
    "Disgusting treatment by your staff, I will tell everyone to avoid you.",
    "Awful quality and rude agents. I regret ever ordering from you.",
)
_POSITIVE_NPS: Final = (
    "Excellent quality and fast delivery, I recommend you to all my friends!",
    "Love this shop, great prices and wonderful staff.",
    "Always a great experience, fantastic service.",
    "Really happy with my orders, easy returns and helpful support.",
)
_NEGATIVE_NPS: Final = (
    "Terrible experience, slow delivery and poor quality.",
    "Very disappointed, support never solved my problem.",
    "Bad value and awful service, I would not recommend you.",
    "Frustrating website and unhelpful staff, I am unhappy.",
)


class SimConfigError(ConfigError, ValueError):
    """A :class:`SimConfig` that cannot be simulated."""


@dataclass(frozen=True)
class CustomerTruth:
    """What the simulator knows about a customer and the engine must infer.

    Attributes
    ----------
    customer_id
        Pseudonymous id, as on the events.
    persona
        One of :data:`PERSONAS`.
    churns
        Planted process: whether the customer stops all activity inside the
        span. Realistic process: whether they have dropped out of buying by its
        end (silently; they may still browse).
    churn_ts
        When ``churns``: ISO-8601 UTC time of the customer's last event
        (planted) or of their dropout (realistic); else None.
    first_ts
        ISO-8601 UTC time of the customer's first event (including logged-out
        browsing before ``identify``); None only for a customer with no events.
    """

    customer_id: str
    persona: str
    churns: bool
    churn_ts: str | None
    first_ts: str | None = None


@dataclass(frozen=True)
class SimConfig:
    """How many customers to simulate, for how long, from which seed.

    Attributes
    ----------
    customers
        Number of simulated customers.
    days
        Length of the span in days, starting at ``start``.
    seed
        Seed of the one random generator everything derives from.
    start
        Timezone-aware start of the span.
    malformed_rate
        Probability, per good event, of also emitting one bad record right after it.
    persona_weights
        Relative share of each persona; None means :data:`DEFAULT_PERSONA_WEIGHTS`.
        Personas left out get no customers.
    process
        ``"planted"``: every persona buys at a steady rate and the fading ones
        stop everything at once (recency alone separates them). ``"realistic"``:
        customers join over the span and buy by a latent purchase process (see
        :class:`_Lifetime`): rates that differ between customers, irregular
        gaps, silent dropout that browsing outlives for some, and comebacks.
    """

    customers: int = 1000
    days: int = 60
    seed: int = 42
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    malformed_rate: float = 0.0
    persona_weights: dict[str, float] | None = None
    process: PurchaseProcess = "planted"


@dataclass(frozen=True)
class _Behaviour:
    """Rates and distributions that make a persona what it is (means per customer)."""

    sessions_per_day: float
    product_views: float  # mean extra product views per browsing session
    cart_rate: float  # P(add to cart | product view) while browsing
    checkout_rate: float  # P(checkout started and abandoned | non-empty cart, no order)
    orders_per_day: float
    items_mean: float
    price_tilt: int  # +1 prefers pricier products, -1 cheaper ones
    discount_rate: float  # P(order uses a discount) outside promo campaigns
    refund_rate: float
    store_share: float  # weight of in-store orders
    email_open: float
    promo_affinity: float  # multiplies open/click/buy rates for promos, divides for others
    email_click: float
    email_buy: float  # P(order | clicked a promo campaign)
    dwell_s: float  # mean time on a product page
    tickets_per_day: float
    slow_ticket_rate: float
    complaint_rate: float  # P(complaint | ticket)
    escalation: float  # weight of high/urgent priorities
    survey_rate: float  # P(CSAT/CES answer | resolved ticket)
    nps_rate: float
    positive_text: float  # P(positive wording) on ticket text
    csat_weights: tuple[int, ...]  # scores 1..5
    nps_weights: tuple[int, ...]  # scores 0..10
    ces_weights: tuple[int, ...]  # scores 1..7, 7 = very easy


# fmt: off
_BEHAVIOURS: Final[Mapping[str, _Behaviour]] = {
    "loyal_high_spender": _Behaviour(
        sessions_per_day=0.15, product_views=1.8, cart_rate=0.12, checkout_rate=0.25,
        orders_per_day=1 / 7.5, items_mean=2.3, price_tilt=1, discount_rate=0.07,
        refund_rate=0.03, store_share=0.25, email_open=0.45, promo_affinity=0.8,
        email_click=0.25, email_buy=0.12, dwell_s=35.0, tickets_per_day=0.012,
        slow_ticket_rate=0.04, complaint_rate=0.02, escalation=0.2, survey_rate=0.7,
        nps_rate=0.6, positive_text=0.95,
        csat_weights=(0, 0, 1, 6, 14), nps_weights=(0, 0, 0, 0, 0, 0, 0, 0, 1, 6, 10),
        ces_weights=(0, 0, 0, 1, 3, 6, 8),
    ),
    "bargain_hunter": _Behaviour(
        sessions_per_day=0.09, product_views=2.0, cart_rate=0.15, checkout_rate=0.35,
        orders_per_day=1 / 22, items_mean=1.4, price_tilt=-1, discount_rate=0.7,
        refund_rate=0.05, store_share=0.1, email_open=0.6, promo_affinity=1.5,
        email_click=0.45, email_buy=0.4, dwell_s=25.0, tickets_per_day=0.012,
        slow_ticket_rate=0.08, complaint_rate=0.05, escalation=0.3, survey_rate=0.5,
        nps_rate=0.4, positive_text=0.8,
        csat_weights=(0, 1, 4, 6, 4), nps_weights=(0, 0, 0, 0, 0, 1, 3, 6, 6, 3, 1),
        ces_weights=(0, 0, 1, 3, 5, 4, 2),
    ),
    "window_shopper": _Behaviour(
        sessions_per_day=0.2, product_views=3.2, cart_rate=0.22, checkout_rate=0.25,
        orders_per_day=0.004, items_mean=1.2, price_tilt=0, discount_rate=0.3,
        refund_rate=0.05, store_share=0.05, email_open=0.35, promo_affinity=1.0,
        email_click=0.35, email_buy=0.02, dwell_s=55.0, tickets_per_day=0.005,
        slow_ticket_rate=0.05, complaint_rate=0.02, escalation=0.2, survey_rate=0.4,
        nps_rate=0.25, positive_text=0.8,
        csat_weights=(0, 1, 4, 6, 3), nps_weights=(0, 0, 0, 0, 1, 2, 4, 6, 5, 2, 1),
        ces_weights=(0, 0, 1, 3, 5, 4, 2),
    ),
    "new_customer": _Behaviour(
        sessions_per_day=0.35, product_views=2.2, cart_rate=0.15, checkout_rate=0.35,
        orders_per_day=1 / 10, items_mean=1.6, price_tilt=0, discount_rate=0.35,
        refund_rate=0.03, store_share=0.1, email_open=0.6, promo_affinity=1.1,
        email_click=0.35, email_buy=0.15, dwell_s=40.0, tickets_per_day=0.03,
        slow_ticket_rate=0.05, complaint_rate=0.02, escalation=0.2, survey_rate=0.6,
        nps_rate=0.5, positive_text=0.9,
        csat_weights=(0, 0, 1, 6, 8), nps_weights=(0, 0, 0, 0, 0, 0, 1, 3, 5, 5, 4),
        ces_weights=(0, 0, 0, 1, 4, 6, 4),
    ),
    "fading": _Behaviour(
        sessions_per_day=0.22, product_views=2.0, cart_rate=0.12, checkout_rate=0.3,
        orders_per_day=1 / 9, items_mean=1.6, price_tilt=0, discount_rate=0.25,
        refund_rate=0.06, store_share=0.15, email_open=0.35, promo_affinity=1.0,
        email_click=0.2, email_buy=0.1, dwell_s=30.0, tickets_per_day=0.02,
        slow_ticket_rate=0.15, complaint_rate=0.1, escalation=0.3, survey_rate=0.5,
        nps_rate=0.35, positive_text=0.4,
        csat_weights=(1, 3, 6, 4, 1), nps_weights=(0, 0, 1, 2, 3, 4, 5, 5, 3, 1, 0),
        ces_weights=(0, 1, 3, 5, 4, 2, 1),
    ),
    "unhappy_support_heavy": _Behaviour(
        sessions_per_day=0.1, product_views=1.5, cart_rate=0.1, checkout_rate=0.3,
        orders_per_day=1 / 35, items_mean=1.5, price_tilt=0, discount_rate=0.2,
        refund_rate=0.4, store_share=0.15, email_open=0.15, promo_affinity=1.0,
        email_click=0.15, email_buy=0.05, dwell_s=25.0, tickets_per_day=0.13,
        slow_ticket_rate=0.35, complaint_rate=0.4, escalation=0.8, survey_rate=0.7,
        nps_rate=0.85, positive_text=0.03,
        csat_weights=(10, 6, 2, 0, 0), nps_weights=(5, 5, 4, 4, 3, 2, 1, 0, 0, 0, 0),
        ces_weights=(8, 6, 3, 1, 0, 0, 0),
    ),
}
# fmt: on


@dataclass(frozen=True)
class _Buying:
    """How a persona buys under the realistic process (means over its customers)."""

    first_order: float  # P(the customer ever orders, at their arrival)
    repeat_days: float  # mean days between repeat orders while alive
    dropout: tuple[float, float]  # Beta(a, b) of P(dropping out after an order)


# fmt: off
_BUYING: Final[Mapping[str, _Buying]] = {
    "loyal_high_spender":    _Buying(first_order=1.0, repeat_days=35, dropout=(1.0, 6.0)),
    "bargain_hunter":        _Buying(first_order=0.9, repeat_days=80, dropout=(1.5, 3.0)),
    "window_shopper":        _Buying(first_order=0.3, repeat_days=250, dropout=(2.0, 2.5)),
    "new_customer":          _Buying(first_order=0.9, repeat_days=60, dropout=(1.5, 2.5)),
    "fading":                _Buying(first_order=1.0, repeat_days=50, dropout=(3.0, 2.5)),
    "unhappy_support_heavy": _Buying(first_order=0.8, repeat_days=120, dropout=(2.5, 2.5)),
}
# fmt: on
# Realistic process, for every persona: the shape of the Gamma spread of
# purchase rates between customers (below 1: most buy rarely, a few often);
# the shape of the Gamma gaps between one customer's orders (below 1:
# bursts and long gaps, not a steady Poisson rhythm); a dropout hazard in
# time besides the one after each order; P(a dropped-out customer comes back)
# and the mean wait; P(browsing outlives buying), and otherwise how fast it fades.
_RATE_SHAPE: Final = 0.6
_GAP_SHAPE: Final = 0.5
_MEAN_LIFETIME_DAYS: Final = 500.0
_COMEBACK_SHARE: Final = 0.25
_COMEBACK_MEAN_DAYS: Final = 150.0
_LINGER_SHARE: Final = 0.35
_FADE_DAYS: Final = (5.0, 30.0)


class _Lifetime:
    """A customer's latent life as a buyer under the realistic process.

    From ``arrival_ms`` they order (with P ``first_order``) and then buy at
    their own rate while alive, in Gamma-distributed gaps. After each order
    they drop out with their own probability, and at any time with a small
    hazard. A dropped-out customer may come back later with an order. Other
    activity follows :meth:`presence`: full while alive; after a dropout it
    either lingers at a lower level (browsing without buying) or fades out.
    """

    def __init__(self, rng: random.Random, buying: _Buying, arrival_ms: int, end_ms: int) -> None:
        self.arrival_ms = arrival_ms
        self.orders: list[int] = []
        self.dropouts: list[int] = []
        self.comebacks: list[int] = []
        rate = rng.gammavariate(_RATE_SHAPE, 1.0 / _RATE_SHAPE) / buying.repeat_days
        p_drop = rng.betavariate(*buying.dropout)
        self.linger = rng.uniform(0.2, 0.7) if rng.random() < _LINGER_SHARE else 0.0
        self.fade_ms = rng.uniform(*_FADE_DAYS) * _DAY_MS
        death_ms = arrival_ms + rng.expovariate(1.0 / _MEAN_LIFETIME_DAYS) * _DAY_MS
        if rng.random() >= buying.first_order:
            # Never buys; leaves the site at the end of their lifetime.
            self.dropouts.append(int(death_ms))
            return
        t = arrival_ms + rng.uniform(0.0, 2.0) * _HOUR_MS
        while t < end_ms:
            self.orders.append(int(t))
            gap = rng.gammavariate(_GAP_SHAPE, 1.0 / (_GAP_SHAPE * rate)) * _DAY_MS
            if rng.random() < p_drop:
                drop_ms = t
            elif t + gap >= death_ms:
                drop_ms = death_ms
            else:
                t += gap
                continue
            self.dropouts.append(int(drop_ms))
            if rng.random() >= _COMEBACK_SHARE:
                return
            t = drop_ms + rng.expovariate(1.0 / _COMEBACK_MEAN_DAYS) * _DAY_MS
            self.comebacks.append(int(t))
            death_ms = t + rng.expovariate(1.0 / _MEAN_LIFETIME_DAYS) * _DAY_MS

    def dropped_out_at(self, ts_ms: int) -> int | None:
        """When the customer dropped out, if they are out of buying at ``ts_ms``."""
        last_drop = next((d for d in reversed(self.dropouts) if d <= ts_ms), None)
        if last_drop is None:
            return None
        back = any(last_drop < c <= ts_ms for c in self.comebacks)
        return None if back else last_drop

    def presence(self, ts_ms: int) -> float:
        """How much of their usual activity the customer shows at ``ts_ms`` (0..1)."""
        if ts_ms < self.arrival_ms:
            return 0.0
        dropped_ms = self.dropped_out_at(ts_ms)
        if dropped_ms is None:
            return 1.0
        return self.linger or math.exp(-(ts_ms - dropped_ms) / self.fade_ms)


@dataclass(frozen=True)
class _Product:
    product_id: str
    category: str
    price_cents: int


@dataclass(frozen=True)
class _Campaign:
    name: str
    promo: bool
    sent_ms: int


@dataclass(frozen=True)
class _World:
    """What every customer shares: the span, the catalogue, the email calendar."""

    start_ms: int
    end_ms: int
    catalogue: Mapping[str, tuple[_Product, ...]]
    campaigns: tuple[_Campaign, ...]


@dataclass(frozen=True)
class _Order:
    order_id: str
    lines: tuple[tuple[_Product, int], ...]  # (product, qty)
    discount_cents: int
    currency: str
    channel: str


def simulate(config: SimConfig) -> tuple[list[Event], list[CustomerTruth]]:
    """Simulate every customer's events over the span, and the truth behind them.

    Parameters
    ----------
    config
        Size, span, seed and malformed rate of the run.

    Returns
    -------
    tuple
        ``(events, truth)``: events sorted by ``(ts, event_id)``, each with a
        ``"topic"`` role; when ``malformed_rate > 0`` a bad record (see
        :func:`malformed_records`) follows some events. ``truth`` has one
        :class:`CustomerTruth` per customer, in customer-id order.

    Raises
    ------
    SimConfigError
        If the configuration is inconsistent.
    """
    weights = _check_config(config)
    rng = random.Random(config.seed)  # noqa: S311
    start_ms = (config.start - _EPOCH) // timedelta(milliseconds=1)
    end_ms = start_ms + config.days * _DAY_MS
    world = _World(start_ms, end_ms, _make_catalogue(rng), _make_campaigns(rng, start_ms, end_ms))
    personas = _assign_personas(rng, config.customers, weights)
    customer_seeds = [rng.getrandbits(64) for _ in personas]
    malformed_rng = random.Random(rng.getrandbits(64))  # noqa: S311

    timeline: list[tuple[int, int, int, Event]] = []
    truth: list[CustomerTruth] = []
    for index, (persona, seed) in enumerate(zip(personas, customer_seeds, strict=True)):
        customer = _Customer(
            world,
            index + 1,
            persona,
            random.Random(seed),  # noqa: S311
            config.process,
        )
        records = customer.live()
        timeline.extend((ts_ms, index, seq, event) for ts_ms, seq, event in records)
        first_ms = min((r[0] for r in records), default=None)
        last_ms = max((r[0] for r in records), default=None)
        if customer.lifetime is not None:
            churn_ms = customer.lifetime.dropped_out_at(end_ms - 1)
        else:
            churn_ms = last_ms if persona == "fading" else None
        truth.append(
            CustomerTruth(
                customer_id=customer.customer_id,
                persona=persona,
                churns=churn_ms is not None,
                churn_ts=_iso_ms(churn_ms) if churn_ms is not None else None,
                first_ts=_iso_ms(first_ms) if first_ms is not None else None,
            )
        )
    timeline.sort(key=lambda item: item[:3])

    events: list[Event] = []
    bad_count = 0
    for number, (ts_ms, _, _, event) in enumerate(timeline, start=1):
        event["event_id"] = f"ev-{number:09d}"
        event["ts"] = _iso_ms(ts_ms)
        events.append(event)
        if config.malformed_rate and malformed_rng.random() < config.malformed_rate:
            kind = MALFORMED_KINDS[bad_count % len(MALFORMED_KINDS)]
            events.append(malformed_records(malformed_rng, event, kind))
            bad_count += 1
    return events, truth


def malformed_records(
    rng: random.Random, good_event: Mapping[str, Any], kind: MalformedKind | None = None
) -> Event:
    """A bad record derived from a good event, as a broken producer would send it.

    Parameters
    ----------
    rng
        Generator for the choices inside a kind (which field to drop, …).
    good_event
        A simulated event with its ``"topic"`` role.
    kind
        One of :data:`MALFORMED_KINDS`; None picks one with ``rng``.

    Returns
    -------
    dict
        ``{"topic": role, "raw": bytes, "key": str | None, "malformed": kind}``.
        ``raw`` is the message value exactly as it would be on the topic (for
        most kinds an encoded JSON object). Bad payloads get the event id of
        their good event plus ``"-bad"``, so they never collide with a good one.
        Amount kinds are orders on ``purchases`` whatever the good event's topic.

    Examples
    --------
    >>> good = {"topic": "clickstream", "schema_version": 1, "event_id": "ev-1",
    ...         "customer_id": "c000001", "ts": "2026-01-01T00:00:00.000Z",
    ...         "type": "page_view"}
    >>> bad = malformed_records(random.Random(0), good, "unknown_type")
    >>> bad["topic"], bad["key"], orjson.loads(bad["raw"])["type"]
    ('clickstream', 'c000001', 'teleport')
    """
    if kind is None:
        kind = rng.choice(MALFORMED_KINDS)
    role = str(good_event.get("topic", "clickstream"))
    body = {k: v for k, v in good_event.items() if k != "topic"}
    body["event_id"] = f"{body.get('event_id', 'ev')}-bad"
    key = partition_key(good_event)
    raw: bytes
    if kind == "not_json":
        raw = b"{not json"
    elif kind == "not_object":
        raw = orjson.dumps([body]) if rng.random() < 0.5 else b"42"
    elif kind == "missing_field":
        # Without anonymous_id a clickstream event may not lose its customer_id.
        identified = "customer_id" in body and "anonymous_id" not in body
        body.pop(rng.choice(("customer_id", "ts", "type") if identified else ("ts", "type")))
        raw = orjson.dumps(body)
    elif kind == "wrong_type":
        if role == "purchases" and rng.random() < 0.5:
            body["amount"] = "abc"
        else:
            body["ts"] = [body["ts"]]
        raw = orjson.dumps(body)
    elif kind == "unknown_type":
        body["type"] = "teleport"
        raw = orjson.dumps(body)
    elif kind in ("negative_amount", "absurd_amount"):
        role = "purchases"
        order = _bad_order(body, -5.0 if kind == "negative_amount" else 1e12)
        key = order["customer_id"]
        raw = orjson.dumps(order)
    elif kind == "future_time":
        body["ts"] = "2999-01-01T00:00:00.000Z"
        raw = orjson.dumps(body)
    elif kind == "ancient_time":
        body["ts"] = "1985-06-01T12:00:00.000Z"
        raw = orjson.dumps(body)
    elif kind == "oversized":
        body["padding"] = "x" * OVERSIZED_BYTES
        raw = orjson.dumps(body)
    elif kind == "invalid_utf8":
        body["customer_id"] = "__invalid_utf8__"
        raw = orjson.dumps(body).replace(b"__invalid_utf8__", b"\xff\xfe")
    elif kind == "missing_key":
        key = None
        raw = orjson.dumps(body)
    elif kind == "key_mismatch":
        key = _other_customer_id(rng, key)
        raw = orjson.dumps(body)
    else:
        raise SimConfigError(f"unknown malformed kind: {kind!r}")
    return {"topic": role, "raw": raw, "key": key, "malformed": kind}


def write_outputs(config: SimConfig, out_dir: Path) -> tuple[int, int]:
    """Simulate and write ``events.jsonl`` and ``truth.jsonl`` into ``out_dir``.

    Good events are written as they are. A bad record becomes
    ``{"topic", "malformed", "raw_b64", "key"}`` so the file stays valid JSONL
    even when the raw value is not JSON; :func:`read_events` reverses this.

    Parameters
    ----------
    config
        What to simulate.
    out_dir
        Directory to write into; created if missing.

    Returns
    -------
    tuple
        ``(records, customers)``: lines written to ``events.jsonl`` (good events
        plus bad records) and to ``truth.jsonl``.
    """
    events, truth = simulate(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "events.jsonl").open("wb") as handle:
        for event in events:
            handle.write(_jsonl_line(event))
    with (out_dir / "truth.jsonl").open("wb") as handle:
        for customer in truth:
            handle.write(orjson.dumps(asdict(customer), option=orjson.OPT_APPEND_NEWLINE))
    return len(events), len(truth)


def read_events(path: Path) -> Iterator[Event]:
    """Events and bad records from an ``events.jsonl`` written by :func:`write_outputs`.

    Bad records come back with their ``raw`` bytes, as :func:`simulate` returned them.
    """
    with path.open("rb") as handle:
        for line in handle:
            record: Event = orjson.loads(line)
            if "malformed" in record:
                record = {
                    "topic": record["topic"],
                    "raw": base64.b64decode(record["raw_b64"]),
                    "key": record["key"],
                    "malformed": record["malformed"],
                }
            yield record


def read_truth(path: Path) -> list[CustomerTruth]:
    """The truth written by :func:`write_outputs`."""
    with path.open("rb") as handle:
        return [CustomerTruth(**orjson.loads(line)) for line in handle]


def _jsonl_line(event: Mapping[str, Any]) -> bytes:
    if "malformed" in event:
        event = {
            "topic": event["topic"],
            "malformed": event["malformed"],
            "raw_b64": base64.b64encode(event["raw"]).decode("ascii"),
            "key": event["key"],
        }
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


def _check_config(config: SimConfig) -> dict[str, float]:
    """Validated persona weights; raises on anything that cannot be simulated."""
    if config.customers < 0:
        raise SimConfigError("customers must be >= 0")
    if config.days < 1:
        raise SimConfigError("days must be >= 1")
    if not 0.0 <= config.malformed_rate <= 1.0:
        raise SimConfigError("malformed_rate must be within [0, 1]")
    if config.start.tzinfo is None or config.start.utcoffset() is None:
        raise SimConfigError("start must be timezone-aware")
    if config.process not in get_args(PurchaseProcess):
        raise SimConfigError(f"process must be one of {get_args(PurchaseProcess)}")
    weights = dict(
        DEFAULT_PERSONA_WEIGHTS if config.persona_weights is None else config.persona_weights
    )
    unknown = sorted(set(weights) - set(PERSONAS))
    if unknown:
        raise SimConfigError(f"unknown personas in persona_weights: {unknown}")
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise SimConfigError("persona weights must be finite and >= 0")
    if sum(weights.values()) <= 0:
        raise SimConfigError("persona weights must not all be zero")
    return {p: float(weights.get(p, 0.0)) for p in PERSONAS}


def _assign_personas(
    rng: random.Random, customers: int, weights: Mapping[str, float]
) -> list[Persona]:
    """Exact quotas by largest remainder, shuffled, so small runs still get every persona."""
    total = sum(weights.values())
    exact = {p: customers * w / total for p, w in weights.items()}
    counts = {p: math.floor(x) for p, x in exact.items()}
    by_remainder = sorted(PERSONAS, key=lambda p: (-(exact[p] - counts[p]), PERSONAS.index(p)))
    for persona in by_remainder[: customers - sum(counts.values())]:
        counts[persona] += 1
    personas = [p for p in PERSONAS for _ in range(counts[p])]
    rng.shuffle(personas)
    return personas


def _make_catalogue(rng: random.Random) -> dict[str, tuple[_Product, ...]]:
    catalogue: dict[str, tuple[_Product, ...]] = {}
    number = 0
    for category in CATEGORIES:
        low, high = _CATEGORY_PRICE_EUR[category]
        products = []
        for _ in range(_PRODUCTS_PER_CATEGORY):
            number += 1
            # Log-uniform: many cheap items, a few expensive ones.
            price = math.exp(rng.uniform(math.log(low), math.log(high)))
            cents = round(price) * 100 - 1 if price > 10 else round(price * 100)
            products.append(_Product(f"p{number:05d}", category, max(cents, 99)))
        catalogue[category] = tuple(products)
    return catalogue


def _make_campaigns(rng: random.Random, start_ms: int, end_ms: int) -> tuple[_Campaign, ...]:
    campaigns: list[_Campaign] = []
    day = rng.uniform(0.5, 3.0)
    while True:
        # Sent mid-morning of the day, span-relative.
        sent_ms = start_ms + int(day) * _DAY_MS + rng.randrange(9 * _HOUR_MS, 11 * _HOUR_MS)
        if sent_ms >= end_ms:
            break
        theme, promo = rng.choice(_CAMPAIGN_THEMES)
        campaigns.append(_Campaign(f"{theme}-{len(campaigns) + 1:02d}", promo, sent_ms))
        day += rng.uniform(3.0, 5.0)
    return tuple(campaigns)


def _other_customer_id(rng: random.Random, customer_id: str | None) -> str:
    while True:
        candidate = f"c{rng.randrange(1, 1_000_000):06d}"
        if candidate != customer_id:
            return candidate


def _bad_order(body: Mapping[str, Any], amount: float) -> Event:
    """An order for the same customer and time whose amount breaks the contract."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": body["event_id"],
        "customer_id": body.get("customer_id") or "c000000",
        "ts": body.get("ts"),
        "type": "order",
        "order_id": f"o-{body['event_id']}",
        "amount": amount,
        "currency": "EUR",
        "items": [{"sku": "p00001", "category": "electronics", "qty": 1, "unit_price": amount}],
        "discount": 0.0,
        "channel": "web",
    }


@functools.lru_cache(maxsize=8192)
def _iso_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def _iso_ms(ts_ms: int) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix.

    >>> _iso_ms(1_767_225_600_123)
    '2026-01-01T00:00:00.123Z'
    """
    day, rest = divmod(ts_ms, _DAY_MS)
    return (
        f"{_iso_day(day)}T{rest // _HOUR_MS:02d}:{rest // 60_000 % 60:02d}:"
        f"{rest // 1000 % 60:02d}.{rest % 1000:03d}Z"
    )


def _pick(rng: random.Random, options: Sequence[_T], cum_weights: Sequence[float]) -> _T:
    """``rng.choices(options, cum_weights=...)[0]`` without its per-call overhead."""
    return options[bisect(cum_weights, rng.random() * cum_weights[-1])]


def _weights_with_noise(
    rng: random.Random, base: Mapping[str, float], sigma: float
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Per-customer preferences: the base shares, each scaled by log-normal noise."""
    names = tuple(base)
    cum: list[float] = []
    total = 0.0
    for name in names:
        total += base[name] * rng.lognormvariate(0.0, sigma)
        cum.append(total)
    return names, tuple(cum)


class _Customer:
    """One simulated customer; :meth:`live` returns their ``(ts_ms, seq, event)`` records."""

    def __init__(
        self,
        world: _World,
        number: int,
        persona: str,
        rng: random.Random,
        process: PurchaseProcess = "planted",
    ) -> None:
        self.world = world
        self.customer_id = f"c{number:06d}"
        self.persona = persona
        self.rng = rng
        self.b = _BEHAVIOURS[persona]
        self.records: list[tuple[int, int, Event]] = []
        self.orders: list[_Order] = []
        self.sessions = 0
        self.tickets = 0
        # Per-customer variation around the persona's means.
        self.activity = rng.lognormvariate(0.0, 0.35)
        self.buying = rng.lognormvariate(0.0, 0.3)
        self.email_open = min(0.95, self.b.email_open * rng.uniform(0.6, 1.4))
        self.categories, self.category_cum = _weights_with_noise(
            rng, dict.fromkeys(CATEGORIES, 1.0), 1.0
        )
        self.session_channels, self.session_channel_cum = _weights_with_noise(
            rng, {"web": 0.55, "app": 0.36, "social": 0.06, "store": 0.03}, 0.7
        )
        self.fulfilment, self.fulfilment_cum = _weights_with_noise(
            rng,
            {"delivery": 0.6, "click_and_collect": 0.25, "store": self.b.store_share},
            0.8,
        )
        unhappy = persona == "unhappy_support_heavy"
        self.support_channels, self.support_channel_cum = _weights_with_noise(
            rng,
            {
                "email": 0.35,
                "chat": 0.35,
                "phone": 0.3 if unhappy else 0.2,
                "social": 0.15 if unhappy else 0.05,
            },
            0.5,
        )
        self.lo_ms, self.hi_ms = world.start_ms, world.end_ms
        self.fade_ms = self.hi_ms
        span = world.end_ms - world.start_ms
        self.lifetime: _Lifetime | None = None
        if persona == "new_customer":
            self.lo_ms = world.start_ms + int(span * rng.uniform(0.8, 0.9))
        elif process == "realistic":
            # Customers keep arriving over most of the span.
            self.lo_ms = world.start_ms + int(span * rng.uniform(0.0, 0.7))
        elif persona == "fading":
            cut = world.start_ms + int(span * rng.uniform(0.3, 0.65))
            self.fade_ms = world.start_ms + int((cut - world.start_ms) * rng.uniform(0.25, 0.55))
            self.hi_ms = cut
        self.anonymous_id = (
            f"a{rng.getrandbits(64):016x}" if rng.random() < _ANONYMOUS_SHARE else None
        )
        self.identified = False
        if process == "realistic":
            self.lifetime = _Lifetime(rng, _BUYING[persona], self.lo_ms, world.end_ms)

    # -- scheduling ------------------------------------------------------------------

    def live(self) -> list[tuple[int, int, Event]]:
        """Plan the customer's activities, act them out, keep what falls in the span."""
        plan: list[tuple[int, int, Callable[[int], None]]] = []

        def add(ts_ms: int, action: Callable[[int], None]) -> None:
            plan.append((ts_ms, len(plan), action))

        for ts_ms in self._arrivals(self.b.sessions_per_day * self.activity, _HOUR_CUM_WEIGHTS):
            add(ts_ms, self._browse_session)
        if self.lifetime is not None:
            for ts_ms in self.lifetime.orders:
                add(ts_ms, self._order_flow)
        else:
            for ts_ms in self._arrivals(self.b.orders_per_day * self.buying, _HOUR_CUM_WEIGHTS):
                add(ts_ms, self._order_flow)
        for ts_ms in self._arrivals(self.b.tickets_per_day, _HOUR_CUM_WEIGHTS):
            add(ts_ms, self._ticket)
        for campaign in self.world.campaigns:
            if self.lo_ms <= campaign.sent_ms < self.hi_ms:
                add(campaign.sent_ms, functools.partial(self._campaign, campaign))
        if self.rng.random() < self.b.nps_rate:
            add(self._some_time(), self._nps_survey)
        if self.lifetime is not None:
            add(self.lo_ms, self._browse_session)  # arrives with a visit
        elif self.persona == "new_customer":
            # Arrives with a first visit, and buys soon after.
            add(self.lo_ms, self._browse_session)
            room = max(self.world.end_ms - self.lo_ms - 2 * _HOUR_MS, _HOUR_MS)
            first_buy = self.lo_ms + int(min(3 * _DAY_MS, room) * self.rng.uniform(0.02, 1.0))
            add(first_buy, functools.partial(self._order_flow, discounted=True))
        elif self.persona == "fading":
            # Was a buying customer before fading away.
            before_fade = self.lo_ms + int((self.fade_ms - self.lo_ms) * self.rng.uniform(0.6, 1.0))
            add(before_fade, self._order_flow)
        for ts_ms, _, action in sorted(plan, key=lambda item: item[:2]):
            action(ts_ms)
        if not self.records:
            # Nobody is simulated without a trace: at least one visit.
            self._browse_session(self._some_time(self.fade_ms))
        return [r for r in self.records if self.world.start_ms <= r[0] < self.world.end_ms]

    def _keeps(self, ts_ms: int) -> bool:
        """Thinning: activity follows the realistic lifetime's presence; fading
        customers' decays to nothing at the cut, fast at first."""
        if not self.lo_ms <= ts_ms < self.hi_ms:
            return False
        if self.lifetime is not None:
            return self.rng.random() < self.lifetime.presence(ts_ms)
        if ts_ms < self.fade_ms:
            return True
        return self.rng.random() < ((self.hi_ms - ts_ms) / (self.hi_ms - self.fade_ms)) ** 3

    def _arrivals(self, rate_per_day: float, hour_cum: Sequence[float]) -> list[int]:
        """Poisson arrivals in the active window, placed at plausible hours of the day."""
        if rate_per_day <= 0:
            return []
        times: list[int] = []
        t = float(self.lo_ms)
        while True:
            t += self.rng.expovariate(rate_per_day) * _DAY_MS
            if t >= self.hi_ms:
                return times
            ts_ms = self._at_hour(int(t), hour_cum)
            if self._keeps(ts_ms):
                times.append(ts_ms)

    def _at_hour(self, ts_ms: int, hour_cum: Sequence[float]) -> int:
        hour = _pick(self.rng, _HOURS, hour_cum)
        moved = ts_ms - ts_ms % _DAY_MS + hour * _HOUR_MS + self.rng.randrange(_HOUR_MS)
        return moved if self.lo_ms <= moved < self.hi_ms else ts_ms

    def _some_time(self, before_ms: int | None = None) -> int:
        """A random time in the active window (or its part before ``before_ms``)."""
        hi_ms = self.hi_ms if before_ms is None else min(before_ms, self.hi_ms)
        return self.lo_ms + int((hi_ms - self.lo_ms) * self.rng.uniform(0.0, 0.95))

    # -- emitting --------------------------------------------------------------------

    def _emit(self, role: Role, ts_ms: int, type_: str, fields: Mapping[str, Any]) -> None:
        event: Event = {
            "topic": role,
            "schema_version": SCHEMA_VERSION,
            "event_id": "",
            "customer_id": self.customer_id,
            "ts": "",
            "type": type_,
        }
        event.update(fields)
        self.records.append((ts_ms, len(self.records), event))

    def _emit_anonymous(self, ts_ms: int, type_: str, fields: Mapping[str, Any]) -> None:
        event: Event = {
            "topic": "clickstream",
            "schema_version": SCHEMA_VERSION,
            "event_id": "",
            "anonymous_id": self.anonymous_id,
            "ts": "",
            "type": type_,
        }
        event.update(fields)
        self.records.append((ts_ms, len(self.records), event))

    def _pick_category(self) -> str:
        return _pick(self.rng, self.categories, self.category_cum)

    def _pick_product(self, category: str | None = None) -> _Product:
        products = self.world.catalogue[category or self._pick_category()]
        first = self.rng.choice(products)
        if self.b.price_tilt == 0:
            return first
        second = self.rng.choice(products)
        pricier = first if first.price_cents >= second.price_cents else second
        cheaper = second if pricier is first else first
        return pricier if self.b.price_tilt > 0 else cheaper

    # -- clickstream -----------------------------------------------------------------

    def _browse_session(self, ts_ms: int) -> None:
        channel = _pick(self.rng, self.session_channels, self.session_channel_cum)
        self._session(ts_ms, channel, basket=None, landing=None)

    def _session(
        self,
        ts_ms: int,
        channel: str,
        basket: Sequence[tuple[_Product, int]] | None,
        landing: str | None,
        session_id: str | None = None,
    ) -> int:
        """Act out one session; returns the time its checkout ended (or its last event)."""
        rng = self.rng
        if session_id is None:
            self.sessions += 1
            session_id = f"s{self.customer_id[1:]}-{self.sessions:04d}"
        # A few customers start their first web/app session logged out, then sign in.
        logged_out = 0
        if self.anonymous_id is not None and not self.identified and channel in ("web", "app"):
            self.identified = True
            logged_out = rng.randint(2, 3)  # every session has at least three events
        t = ts_ms

        def click(type_: str, step_ms: int, **fields: Any) -> None:
            nonlocal t, logged_out
            t += step_ms
            payload = {"session_id": session_id, "channel": channel, **fields}
            if logged_out:
                self._emit_anonymous(t, type_, payload)
                logged_out -= 1
                if not logged_out:
                    t += rng.randrange(2_000, 20_000)
                    self._emit(
                        "clickstream",
                        t,
                        "identify",
                        {
                            "session_id": session_id,
                            "channel": channel,
                            "anonymous_id": self.anonymous_id,
                        },
                    )
            else:
                self._emit("clickstream", t, type_, payload)

        def dwell(mean_s: float) -> int:
            return int(rng.expovariate(1.0 / mean_s) * 1000) + 1_500

        click("session_start", 0)
        if channel == "app":
            click("app_open", rng.randrange(200, 2_000))
        page_ms = dwell(12.0)
        click(
            "page_view",
            rng.randrange(300, 3_000),
            page=landing or rng.choice(_PAGES),
            duration_ms=page_ms,
        )
        step = page_ms
        if rng.random() < 0.35:
            category = self._pick_category()
            click("search", step + rng.randrange(500, 5_000), query=rng.choice(_SEARCHES[category]))
            step = rng.randrange(1_000, 4_000)
        cart: list[_Product] = []
        browsed = int(rng.expovariate(1.0 / self.b.product_views)) + (0 if basket else 1)
        for _ in range(browsed):
            product = self._pick_product()
            view_ms = dwell(self.b.dwell_s)
            click(
                "product_view",
                step + rng.randrange(500, 4_000),
                product_id=product.product_id,
                category=product.category,
                duration_ms=view_ms,
            )
            step = view_ms
            if rng.random() < self.b.cart_rate:
                click("add_to_cart", step, product_id=product.product_id, category=product.category)
                step = rng.randrange(1_000, 5_000)
                cart.append(product)
        for product, _qty in basket or ():
            view_ms = dwell(self.b.dwell_s)
            click(
                "product_view",
                step + rng.randrange(500, 4_000),
                product_id=product.product_id,
                category=product.category,
                duration_ms=view_ms,
            )
            click("add_to_cart", view_ms, product_id=product.product_id, category=product.category)
            step = rng.randrange(1_000, 5_000)
        for product in cart:
            if basket or rng.random() < 0.35:
                click(
                    "remove_from_cart",
                    step + rng.randrange(500, 3_000),
                    product_id=product.product_id,
                    category=product.category,
                )
                step = rng.randrange(500, 2_000)
        if basket or (cart and rng.random() < self.b.checkout_rate):
            click("checkout_start", step + rng.randrange(1_000, 8_000))
        return t

    def _campaign(self, campaign: _Campaign, sent_ms: int) -> None:
        rng = self.rng
        boost = self.b.promo_affinity if campaign.promo else 1.0 / self.b.promo_affinity
        opened_ms = sent_ms + int(rng.expovariate(1.0 / 5.0) * _HOUR_MS)
        if rng.random() >= min(0.95, self.email_open * boost) or not self._keeps(opened_ms):
            return
        self.sessions += 1
        session_id = f"s{self.customer_id[1:]}-{self.sessions:04d}"
        email = {"session_id": session_id, "channel": "email", "campaign": campaign.name}
        self._emit("clickstream", opened_ms, "email_open", email)
        if rng.random() >= min(0.95, self.b.email_click * boost):
            return
        clicked_ms = opened_ms + rng.randrange(5_000, 120_000)
        self._emit("clickstream", clicked_ms, "email_click", email)
        landing = f"landing/{campaign.name}"
        buy = self.b.email_buy * (boost if campaign.promo else 0.3)
        start_ms = clicked_ms + rng.randrange(1_000, 6_000)
        # Under the realistic process every order comes from the lifetime.
        if self.lifetime is None and rng.random() < buy:
            self._order_flow(
                start_ms,
                discounted=campaign.promo or None,
                channel="email",
                landing=landing,
                session_id=session_id,
            )
        else:
            self._session(start_ms, "email", basket=None, landing=landing, session_id=session_id)

    # -- purchases -------------------------------------------------------------------

    def _order_flow(
        self,
        ts_ms: int,
        discounted: bool | None = None,
        channel: str | None = None,
        landing: str | None = None,
        session_id: str | None = None,
    ) -> None:
        """A purchase: in store, or an online funnel ending in an order; maybe a refund later."""
        rng = self.rng
        basket = self._basket()
        fulfilment = _pick(rng, self.fulfilment, self.fulfilment_cum)
        if channel is None and fulfilment == "store":
            order_ms = self._at_hour(ts_ms, _STORE_HOUR_CUM_WEIGHTS)
            order_channel = "store"
        else:
            session_channel = channel or rng.choices(("web", "app"), weights=(0.6, 0.4))[0]
            checkout_ms = self._session(ts_ms, session_channel, basket, landing, session_id)
            order_ms = checkout_ms + rng.randrange(20_000, 240_000)
            # Online orders are recorded by fulfilment, sometimes only by the device used.
            if rng.random() < 0.8:
                order_channel = fulfilment if fulfilment != "store" else "click_and_collect"
            else:
                order_channel = "app" if session_channel == "app" else "web"
        if discounted is None:
            discounted = rng.random() < self.b.discount_rate
        subtotal = sum(p.price_cents * q for p, q in basket)
        discount = round(subtotal * rng.choice((0.1, 0.15, 0.2, 0.25, 0.3))) if discounted else 0
        currency = "eur" if rng.random() < _LOWERCASE_CURRENCY_SHARE else "EUR"
        order = _Order(
            f"o{self.customer_id[1:]}-{len(self.orders) + 1:03d}",
            tuple(basket),
            discount,
            currency,
            order_channel,
        )
        self.orders.append(order)
        self._emit_purchase(order_ms, "order", order, order.lines, discount)
        if rng.random() < self.b.refund_rate:
            self._refund(order_ms, order)

    def _basket(self) -> list[tuple[_Product, int]]:
        rng = self.rng
        size = 1 + int(rng.expovariate(1.0 / max(self.b.items_mean - 1.0, 0.05)))
        quantities: dict[str, tuple[_Product, int]] = {}
        for _ in range(min(size, 8)):
            product = self._pick_product()
            qty = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            held = quantities.get(product.product_id)
            quantities[product.product_id] = (product, qty + (held[1] if held else 0))
        return list(quantities.values())

    def _refund(self, order_ms: int, order: _Order) -> None:
        rng = self.rng
        refund_ms = order_ms + int(rng.uniform(1.0, 14.0) * _DAY_MS)
        if len(order.lines) == 1 or rng.random() < 0.5:
            lines, discount = order.lines, order.discount_cents
        else:
            lines = (rng.choice(order.lines),)
            order_subtotal = sum(p.price_cents * q for p, q in order.lines)
            line_subtotal = sum(p.price_cents * q for p, q in lines)
            discount = round(order.discount_cents * line_subtotal / order_subtotal)
        self._emit_purchase(refund_ms, "refund", order, lines, discount)

    def _emit_purchase(
        self,
        ts_ms: int,
        type_: str,
        order: _Order,
        lines: Sequence[tuple[_Product, int]],
        discount_cents: int,
    ) -> None:
        amount_cents = sum(p.price_cents * q for p, q in lines) - discount_cents
        items = [
            {
                "sku": p.product_id,
                "category": p.category,
                "qty": q,
                "unit_price": p.price_cents / 100,
            }
            for p, q in lines
        ]
        self._emit(
            "purchases",
            ts_ms,
            type_,
            {
                "order_id": order.order_id,
                "amount": amount_cents / 100,
                "currency": order.currency,
                "items": items,
                "discount": discount_cents / 100,
                "channel": order.channel,
            },
        )

    # -- support ---------------------------------------------------------------------

    def _text(self, positive: bool, good: Sequence[str], bad: Sequence[str]) -> str:
        return self.rng.choice(good if positive else bad)

    def _ticket(self, opened_ms: int) -> None:
        rng = self.rng
        self.tickets += 1
        ticket_id = f"t{self.customer_id[1:]}-{self.tickets:03d}"
        channel = _pick(rng, self.support_channels, self.support_channel_cum)
        e = self.b.escalation
        priority = rng.choices(
            ("low", "normal", "high", "urgent"), weights=(0.25, 0.6, 0.3 * e, 0.1 * e)
        )[0]
        positive = rng.random() < self.b.positive_text
        ticket = {"ticket_id": ticket_id, "channel": channel}
        self._emit(
            "support",
            opened_ms,
            "ticket_opened",
            {
                **ticket,
                "priority": priority,
                "text": self._text(positive, _POSITIVE_TICKET, _NEGATIVE_TICKET),
            },
        )
        if rng.random() < self.b.complaint_rate:
            complained_ms = opened_ms + rng.randrange(60_000, 2 * _HOUR_MS)
            self._emit(
                "support",
                complained_ms,
                "complaint",
                {**ticket, "text": rng.choice(_NEGATIVE_COMPLAINT)},
            )
        first_sla, resolve_sla = _SLA_S[priority]
        if rng.random() < self.b.slow_ticket_rate:
            first_response_s = int(first_sla * rng.uniform(1.2, 4.0))
            resolution_s = int(resolve_sla * rng.uniform(1.3, 3.0))
        else:
            first_response_s = int(first_sla * rng.uniform(0.05, 0.9))
            resolution_s = int(resolve_sla * rng.uniform(0.05, 0.9))
        resolution_s = max(resolution_s, first_response_s + rng.randrange(60, 3_600))
        resolved_ms = opened_ms + resolution_s * 1000
        self._emit(
            "support",
            resolved_ms,
            "ticket_resolved",
            {
                **ticket,
                "first_response_s": first_response_s,
                "resolution_s": resolution_s,
            },
        )
        if rng.random() < self.b.survey_rate:
            answered_ms = resolved_ms + rng.randrange(600_000, _DAY_MS)
            csat = rng.choices(range(1, 6), weights=self.b.csat_weights)[0]
            self._emit("support", answered_ms, "csat_response", {**ticket, "score": csat})
            if rng.random() < 0.6:
                ces = rng.choices(range(1, 8), weights=self.b.ces_weights)[0]
                self._emit(
                    "support",
                    answered_ms + rng.randrange(5_000, 90_000),
                    "ces_response",
                    {**ticket, "score": ces},
                )

    def _nps_survey(self, ts_ms: int) -> None:
        score = self.rng.choices(range(11), weights=self.b.nps_weights)[0]
        fields: dict[str, Any] = {"channel": "email", "score": score}
        if self.rng.random() < 0.7:
            positive = score >= 9 or (score >= 7 and self.rng.random() < self.b.positive_text)
            fields["text"] = self._text(positive, _POSITIVE_NPS, _NEGATIVE_NPS)
        self._emit("support", ts_ms, "nps_response", fields)
