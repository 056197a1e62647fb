"""Every key the state holds is declared in ``models.state`` — and every declared key is used.

Random histories go through the functions the worker's engine calls —
decoding, identity stitching, the release of held events
(``models.reorder``), ``update_customer`` with model moments and segments,
deadline refiling and firing — and after every batch each profile,
population, held event list, identity state and deadline index entry is
checked against the declarations. A designed history then shows that every
declared key is really written somewhere, so the declarations cannot go
stale either. ``evaluate`` over a simulated history checks the state the
engine itself keeps.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.deadlines import DeadlineIndex, DictStore
from models.definitions import load_definitions
from models.identity import apply_anonymous
from models.moments import Moments
from models.pipeline import fire_deadlines, new_population, refile_deadline, update_customer
from models.profile import DAY_MS, Profile, ProfileConfig, new_profile
from models.reorder import first_held_ms, release
from models.segments import SegmentConfig, Segmenter
from models.sentiment import compound
from models.simulator import SimConfig, simulate
from models.state import (
    READ_ONLY_PROFILE_KEYS,
    ChurnPending,
    ClosedSession,
    IdentityState,
    OpenSession,
    PopulationState,
    SegmentMembership,
    TopicMemory,
    malformed_deadline_entries,
    undeclared_event_keys,
    undeclared_identity_keys,
    undeclared_keys,
    undeclared_population_keys,
)
from models.training import ModelBundle, ModelConfig
from schemas.decode import DecodeLimits, decode_event
from schemas.records import ClickEvent
from streams.offline import evaluate
from streams.partitioning import partition_for_key
from streams.producer import encode_event
from streams.settings import Settings

START_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
PARTITIONS = 2
CUSTOMERS = ("c1", "c2", "c3", "c4")
ANONYMOUS = ("a1", "a2")
BROWSING = ("page_view", "product_view", "add_to_cart", "search", "email_open", "app_open")
SUPPORT = ("ticket_opened", "ticket_resolved", "csat_response", "nps_response", "ces_response")
KINDS = (*BROWSING, "anonymous", "identify", "order", "refund", *SUPPORT, "complaint")
NEGATIVE_TEXT = "Terrible, awful service. I hate this, the worst experience ever."


# The user's traits and audiences, so their state keys are written too.
DEFINITIONS = load_definitions(
    """
version: 1
traits:
  visits_30d: {aggregate: count, topic: clickstream, type: store_visit, window_days: 30}
audiences:
  store_regular: {when: "visits_30d >= 1"}
"""
)
# A later version of the file: one trait added that the profile's counters
# cannot answer for (its customers with history mark it backfilling), and an
# audience reading a metric a click moves (noted until the next decision).
DEFINITIONS_V2 = load_definitions(
    """
version: 2
traits:
  visits_30d: {aggregate: count, topic: clickstream, type: store_visit, window_days: 30}
  big_orders: {aggregate: count, topic: purchases, where: [{property: amount, op: ">", value: 9}]}
  page_views_7d: {aggregate: count, topic: clickstream, type: page_view, window_days: 7}
  biggest_7d: {aggregate: max, topic: purchases, property: amount, window_days: 7}
audiences:
  store_regular: {when: "visits_30d >= 1 and big_orders >= 0"}
  seen_lately: {when: "days_since(metric.last_seen_at) <= 30"}
"""
)


class Replay:
    """A worker holding every partition, built from the functions the engine calls."""

    def __init__(self, lag_ms: int = 0, max_held: int = 4) -> None:
        self.config = ProfileConfig()
        self.models = ModelBundle(ModelConfig(horizon_days=30, warmup_examples=20, min_labels=5))
        self.moments = Moments(
            scorer=self.models, horizon_ms=30 * DAY_MS, profile_config=self.config, id_key=b"k"
        )
        self.segments = Segmenter(
            config=SegmentConfig(),
            profile_config=self.config,
            scorer=self.models,
            id_key=b"k",
            definitions=DEFINITIONS,
        )
        self.lag_ms, self.max_held = lag_ms, max_held
        self.store = DictStore()  # the deadlines table: customers' deadlines and held events
        self.deadlines = {p: DeadlineIndex(self.store, p, DAY_MS) for p in range(PARTITIONS)}
        self.held_index = {
            p: DeadlineIndex(self.store, p, DAY_MS, namespace="h") for p in range(PARTITIONS)
        }
        self.profiles: dict[str, Profile] = {}
        self.populations: dict[int, PopulationState] = {
            p: new_population() for p in range(PARTITIONS)
        }
        self.held: dict[str, list[dict[str, Any]]] = {}
        self.identities: dict[str, IdentityState] = {}
        self.read_ms = 0  # latest event time read
        self.watermark_ms = 0  # input watermark: read_ms - lag_ms
        self.seen: dict[str, set[str]] = defaultdict(set)  # state kind -> keys ever held

    def batch(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Read a batch of producer lines, apply what the watermark reached, check all state."""
        arrived: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in lines:
            self._read(line, arrived)
        before = self.watermark_ms
        self.watermark_ms = max(self.watermark_ms, self.read_ms - self.lag_ms)
        for customer_id, events in arrived.items():
            self._advance(customer_id, events, before)
        self._advance_partitions(before)
        self.check()

    def finish(self, after_ms: int = 400 * DAY_MS) -> None:
        """Let event time run on with no new event: everything held and due happens."""
        before = self.watermark_ms
        self.watermark_ms = self.read_ms + after_ms
        for _ in range(50):  # a fired deadline can file another that is due as well
            if not self._advance_partitions(before):
                break
        self.check()

    def _read(self, line: Mapping[str, Any], arrived: dict[str, list[dict[str, Any]]]) -> None:
        role, key, value = encode_event(line)
        record = decode_event(role, key, value, DecodeLimits(), time.time_ns() // 1_000_000)
        self.read_ms = max(self.read_ms, int(record.ts))
        if isinstance(record, ClickEvent) and (
            record.customer_id is None or record.type == "identify"
        ):
            anonymous_id = str(record.anonymous_id)
            state, released, _ = apply_anonymous(
                self.identities.get(anonymous_id), msgspec.to_builtins(record), capacity=3
            )
            self.identities[anonymous_id] = state
            for fields in released:  # re-keyed to the customer, read again from clickstream
                self._read({"topic": "clickstream", **fields}, arrived)
            return
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        arrived[str(record.customer_id)].append(fields)

    def _advance(self, customer_id: str, arrived: list[dict[str, Any]], before: int) -> None:
        partition = partition_for_key(customer_id, PARTITIONS)
        population = self.populations[partition]
        held = self.held.get(customer_id, [])
        ready, still, _ = release(held, arrived, self.watermark_ms, self.max_held)
        if still:
            self.held[customer_id] = still
            first = first_held_ms(still)
            if first is not None and first != first_held_ms(held):
                self.held_index[partition].schedule(customer_id, first)
        else:
            self.held.pop(customer_id, None)
        population["held_customers"] = (
            population.get("held_customers", 0) + (1 if still else 0) - (1 if held else 0)
        )
        if not ready:
            return
        profile, outcomes = update_customer(
            self.profiles.get(customer_id),
            ready,
            population,
            self.config,
            compound,
            before,
            customer_id,
            self.moments,
            self.segments,
        )
        assert profile is not None
        self.profiles[customer_id] = profile
        population["watermark_ms"] = max(population.get("watermark_ms", 0), int(ready[-1]["ts"]))
        if any(outcome != "duplicate" for outcome in outcomes):
            refile_deadline(
                self.deadlines[partition], customer_id, profile, self.moments, self.segments
            )

    def _advance_partitions(self, before: int) -> bool:
        acted = False
        for partition in range(PARTITIONS):
            for due, customer_id in self.held_index[partition].pop_due(self.watermark_ms):
                if first_held_ms(self.held.get(customer_id, [])) == due:
                    self._advance(customer_id, [], before)
                    acted = True
            fired = fire_deadlines(
                self.deadlines[partition],
                self.watermark_ms,
                self.profiles.get,
                self.moments,
                self.segments,
                self.populations[partition],
            )
            acted |= bool(fired)
        for example in self.moments.examples:
            self.models.learn(example)
        self.moments.examples.clear()
        self.segments.changes.clear()
        self.segments.triggers.clear()
        return acted

    def check(self) -> None:
        """Fail on any undeclared key in any state; remember which keys were held."""
        for customer_id, profile in self.profiles.items():
            assert undeclared_keys(profile) == set(), customer_id
            self.seen["profile"] |= set(profile)
            self.seen["sessions[]"] |= {k for s in profile["sessions"] for k in s}
            self.seen["closed_sessions[]"] |= {k for s in profile["closed_sessions"] for k in s}
            self.seen["churn_pending[]"] |= {k for p in profile.get("churn_pending", []) for k in p}
            self.seen["segments.*"] |= {k for m in profile.get("segments", {}).values() for k in m}
            self.seen["dedup.*"] |= {k for m in profile.get("dedup", {}).values() for k in m}
        for partition, population in self.populations.items():
            assert undeclared_population_keys(population) == set(), partition
            self.seen["population"] |= set(population)
        for customer_id, held in self.held.items():
            assert held, customer_id  # a customer holding nothing has no entry
            assert undeclared_event_keys(held) == set(), customer_id
        for anonymous_id, identity in self.identities.items():
            assert undeclared_identity_keys(identity) == set(), anonymous_id
            self.seen["identity"] |= set(identity)
        assert malformed_deadline_entries(self.store.data) == set()
        assert sum(p.get("held_customers", 0) for p in self.populations.values()) == len(self.held)


# --- random histories -------------------------------------------------------------


def line(topic: str, type_: str, ts_ms: int, event_id: str, **fields: Any) -> dict[str, Any]:
    """A producer line as the simulator writes it (``ts`` in epoch ms)."""
    return {"topic": topic, "type": type_, "ts": ts_ms, "event_id": event_id, **fields}


def click(type_: str, ts: int, event_id: str, customer: str, **fields: Any) -> dict[str, Any]:
    return line("clickstream", type_, ts, event_id, customer_id=customer, **fields)


def order(ts: int, event_id: str, customer: str, amount: float, **fields: Any) -> dict[str, Any]:
    fields.setdefault("order_id", event_id)
    return line("purchases", "order", ts, event_id, customer_id=customer, amount=amount, **fields)


def support(type_: str, ts: int, event_id: str, customer: str, **fields: Any) -> dict[str, Any]:
    return line("support", type_, ts, event_id, customer_id=customer, **fields)


@st.composite
def events(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    customer = draw(st.sampled_from(CUSTOMERS))
    ts = START_MS + draw(st.integers(0, 150 * DAY_MS))
    category = draw(st.sampled_from(("shoes", "books", None)))
    kind = draw(st.sampled_from(KINDS))
    ticket = draw(st.sampled_from(("t1", "t2")))
    if kind in BROWSING:
        session = draw(st.sampled_from(("s1", "s2", None)))
        extra = {"session_id": session} if session else {}
        if draw(st.booleans()):
            extra["anonymous_id"] = draw(st.sampled_from(ANONYMOUS))
        if category and kind in ("product_view", "add_to_cart"):
            extra["category"] = category
        extra["channel"] = draw(st.sampled_from(("web", "app")))
        return click(
            kind, ts, event_id, customer, duration_ms=draw(st.integers(0, 600_000)), **extra
        )
    if kind == "anonymous":
        anonymous_id = draw(st.sampled_from(ANONYMOUS))
        return line("clickstream", "page_view", ts, event_id, anonymous_id=anonymous_id)
    if kind == "identify":
        anonymous_id = draw(st.sampled_from(ANONYMOUS))
        return click("identify", ts, event_id, customer, anonymous_id=anonymous_id)
    amount = draw(st.floats(1.0, 500.0, allow_nan=False))
    if kind == "order":
        items = [{"sku": "k1", "category": category, "qty": draw(st.integers(1, 3))}]
        discount = draw(st.sampled_from((0.0, 5.0)))
        return order(ts, event_id, customer, round(amount, 2), items=items, discount=discount)
    if kind == "refund":
        refund = {"customer_id": customer, "order_id": "o1", "amount": round(amount, 2)}
        return line("purchases", "refund", ts, event_id, **refund)
    if kind == "ticket_opened":
        priority = draw(st.sampled_from(("urgent", "normal")))
        return support(kind, ts, event_id, customer, ticket_id=ticket, priority=priority)
    if kind == "ticket_resolved":
        times = {"first_response_s": draw(st.sampled_from((60.0, 200_000.0)))}
        return support(kind, ts, event_id, customer, ticket_id=ticket, **times)
    if kind == "complaint":
        text = draw(st.sampled_from((NEGATIVE_TEXT, "Thanks, all good now.")))
        return support(kind, ts, event_id, customer, text=text)
    low, high = {"csat_response": (1, 5), "nps_response": (0, 10), "ces_response": (1, 7)}[kind]
    return support(kind, ts, event_id, customer, score=draw(st.integers(low, high)))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], int]:
    """Events in arrival order (up to two days off event time), cut into batches; a lag."""
    n = draw(st.integers(1, 40))
    lines = [draw(events(f"e{i}")) for i in range(n)]
    read_at = {e["event_id"]: e["ts"] + draw(st.integers(0, 2 * DAY_MS)) for e in lines}
    arrival = sorted(lines, key=lambda e: read_at[e["event_id"]])
    if draw(st.booleans()) and arrival:  # redelivery: an event read twice
        arrival.append(dict(draw(st.sampled_from(arrival))))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(arrival) - 1, 1)), max_size=6)))
    bounds = [0, *cuts, len(arrival)]
    batches = [arrival[a:b] for a, b in itertools.pairwise(bounds) if a < b]
    lag = draw(st.sampled_from((0, HOUR_MS, DAY_MS, 3 * DAY_MS)))
    return batches, lag


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_write_only_declared_keys(
    history: tuple[list[list[dict[str, Any]]], int],
) -> None:
    batches, lag = history
    replay = Replay(lag_ms=lag, max_held=2)
    for batch in batches:
        replay.batch(batch)  # checks every state after each batch
    replay.finish()
    assert not replay.held  # event time ran on: nothing is held any more


# --- every declared key is written --------------------------------------------------


def designed_history() -> list[dict[str, Any]]:
    """One customer who does every kind of thing a profile records, and an anonymous visitor."""
    d, h = DAY_MS, HOUR_MS
    t = START_MS
    return [
        line("clickstream", "page_view", t, "x1", anonymous_id="a1"),
        click("identify", t + h, "x2", "c1", anonymous_id="a1"),
        click("page_view", t + h, "x3", "c1", session_id="s1", anonymous_id="a1", duration_ms=9),
        click("product_view", t + h, "x4", "c1", session_id="s1", category="shoes"),
        click("add_to_cart", t + h, "x5", "c1", session_id="s1", category="shoes"),
        order(t + 2 * h, "x6", "c1", 40.0, items=[{"sku": "k", "category": "shoes"}]),
        click("add_to_cart", t + 5 * h, "x7", "c1", category="books"),  # abandoned
        # A backfilled ticket, then live events again.
        support(
            "ticket_opened", t + d, "x8", "c1", ticket_id="t1", priority="urgent", historical=True
        ),
        support("nps_response", t + 2 * d, "x9", "c1", score=3),
        support("complaint", t + 2 * d, "x10", "c1", text=NEGATIVE_TEXT),
        support("csat_response", t + 3 * d, "x11", "c1", score=2),
        support("ces_response", t + 3 * d, "x12", "c1", score=6),
        click("page_view", t + 9 * d, "x13", "c1", session_id="s2"),
        order(t + 10 * d, "x14", "c1", 25.0),
        line("clickstream", "page_view", t + 20 * d, "x15", anonymous_id="a2"),
        # Dormant after 60 days without an order, then back.
        order(t + 80 * d, "x16", "c1", 30.0),
        click("page_view", t + 81 * d, "x17", "c1", session_id="s3"),
        click("track", t + 82 * d, "x18", "c1", name="store_visit", properties={"store": "s"}),
    ]


def declared(typed_dict: type) -> set[str]:
    return set(typed_dict.__annotations__)


def test_every_declared_key_is_written_by_some_history() -> None:
    replay = Replay(lag_ms=DAY_MS)
    for event in designed_history():
        replay.batch([event])
    replay.segments.definitions = DEFINITIONS_V2  # the file changes under a running worker
    replay.batch([order(START_MS + 90 * DAY_MS, "x19", "c1", 20.0)])
    # A later click of the same day is no decision point: the trait it moved waits.
    replay.batch([click("page_view", START_MS + 90 * DAY_MS + HOUR_MS, "x20", "c1")])
    replay.batch([click("page_view", START_MS + 91 * DAY_MS + 2 * HOUR_MS, "x21", "c1")])
    replay.finish()
    seen = replay.seen
    assert seen["profile"] == declared(Profile) - READ_ONLY_PROFILE_KEYS
    assert seen["dedup.*"] == declared(TopicMemory)
    assert seen["sessions[]"] == declared(OpenSession)
    assert seen["closed_sessions[]"] == declared(ClosedSession)
    assert seen["churn_pending[]"] == declared(ChurnPending)
    assert seen["segments.*"] == declared(SegmentMembership)
    assert seen["population"] == declared(PopulationState)
    assert seen["identity"] == declared(IdentityState)


def test_new_profile_holds_exactly_the_required_keys() -> None:
    # NotRequired keys are the ones added later in a profile's life.
    assert set(new_profile()) == set(Profile.__required_keys__)
    assert set(new_population()) == set(PopulationState.__required_keys__)
    assert "segments" in Profile.__optional_keys__


def test_evaluate_keeps_only_declared_keys() -> None:
    history, _ = simulate(
        SimConfig(customers=25, days=40, seed=5, start=datetime(2026, 3, 1, tzinfo=UTC))
    )
    run = evaluate(history, Settings(_env_file=None))
    assert len(run.profiles) >= 20
    for customer_id, profile in run.profiles.items():
        assert undeclared_keys(profile) == set(), customer_id
    for partition, population in run.populations.items():
        assert undeclared_population_keys(population) == set(), partition
