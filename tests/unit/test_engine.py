"""The partition engine without a broker (models.engine).

The worker and ``segstream evaluate`` hand it decoded records and act on
what it returns; these tests drive it the way the worker does — batches,
input watermarks from per-topic frontiers, idle advances — and check the
orchestration: event-time order across the three topics, late events, held
events and their release, deadlines, erasure, and that batch boundaries do
not change any output.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models import quantiles
from models.engine import EngineConfig, Outputs, PartitionEngine, PartitionStores, Watermarks
from models.profile import DAY_MS, event
from models.simulator import SimConfig, simulate
from schemas.decode import DecodeLimits, decode_event
from streams.partitioning import partition_for_key
from streams.producer import encode_event

CONFIG = EngineConfig.default()
TOPICS = ("clickstream", "purchases", "support")


def decoded_history(customers: int = 12, days: int = 40, seed: int = 5) -> list[dict[str, Any]]:
    """A simulated history as the worker decodes it, each record with its topic."""
    lines, _ = simulate(
        SimConfig(customers=customers, days=days, seed=seed, start=datetime(2026, 3, 1, tzinfo=UTC))
    )
    out: list[dict[str, Any]] = []
    now = time.time_ns() // 1_000_000
    for line in lines:
        role, key, value = encode_event(line)
        if role not in TOPICS or "malformed" in line:
            continue
        try:
            record = decode_event(role, key, value, DecodeLimits(), now)
        except Exception:  # noqa: S112 - the simulator plants bad records on purpose
            continue
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        fields["partition"] = partition_for_key((key or b"").decode(), 2)
        out.append(fields)
    return out


def arrival_by_topic(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How a backlog is read: a topic's records in order, topics far apart in event time.

    Purchases and support come first (as a worker reading a backlog takes the
    sparse topics' records in big strides), then the clickstream.
    """
    return [
        e
        for topic in ("purchases", "support", "clickstream")
        for e in history
        if e["topic"] == topic
    ]


class Frontiers:
    """Per-topic latest event time read; a topic read to its end stops holding back."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.remaining = {t: sum(1 for r in records if r["topic"] == t) for t in TOPICS}
        self.frontier = dict.fromkeys(TOPICS, 0)

    def read(self, batch: list[dict[str, Any]]) -> int:
        for record in batch:
            topic = record["topic"]
            self.remaining[topic] -= 1
            self.frontier[topic] = max(self.frontier[topic], int(record["ts"]))
        # As the worker's input watermark: the slowest topic still being read,
        # or the latest event time once every topic has been read to its end.
        holding = [self.frontier[t] for t in TOPICS if self.remaining[t] > 0]
        return min(holding) if holding else max(self.frontier.values())


def run(records: list[dict[str, Any]], cuts: list[int]) -> tuple[PartitionEngine, Outputs]:
    """Feed ``records`` in batches split at ``cuts``, as the worker does; then a final advance."""
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    frontiers = Frontiers(records)
    outputs = Outputs()
    bounds = [0, *sorted(set(cuts)), len(records)]
    for start, end in itertools.pairwise(bounds):
        batch = records[start:end]
        if not batch:
            continue
        watermark = frontiers.read(batch)
        step = engine.submit(batch, Watermarks(closing=watermark, release=watermark))
        outputs.extend(step)
    last = max(int(r["ts"]) for r in records)
    outputs.extend(engine.advance(Watermarks(closing=last, release=last)))
    return engine, outputs


def partition_zero(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k != "partition"} for r in history if r["partition"] == 0
    ]


HISTORY = partition_zero(decoded_history())


def dump(engine: PartitionEngine, outputs: Outputs) -> bytes:
    stores = engine.stores
    state = {
        name: getattr(stores, name).data  # type: ignore[attr-defined]
        # The deadline index is left out: which stale entries it still holds
        # depends on when it was read (each profile's own deadline is compared).
        for name in ("profiles", "population", "held", "identities")
    }
    body = {
        "state": state,
        "changes": outputs.changes,
        "triggers": outputs.triggers,
        "examples": outputs.examples,
        "rekeyed": outputs.rekeyed,
        # How many events waited (the held counts) describes the reading, not the result.
        "counts": sorted((list(k), v) for k, v in outputs.counts.items() if k[0] != "held"),
    }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def test_events_read_topic_by_topic_are_applied_in_event_time_order() -> None:
    in_order = sorted(HISTORY, key=lambda r: (int(r["ts"]), r["event_id"]))
    cuts = list(range(0, len(HISTORY), 50))
    by_topic, by_topic_out = run(arrival_by_topic(HISTORY), cuts)
    ordered, ordered_out = run(in_order, cuts)
    assert by_topic_out.counts["held", "clickstream"] == 0  # clicks come last: nothing to wait for
    assert by_topic_out.counts["held", "purchases"] > 0  # orders waited for the clicks
    assert by_topic.stores.held.data == {}  # type: ignore[attr-defined]
    # Every event was processed once, however long it waited.
    processed = [n for (what, _), n in by_topic_out.counts.items() if what == "processed"]
    assert sum(processed) == len(HISTORY)
    # The same profiles, population and outputs as reading the history in time order.
    for name in ("profiles", "population"):
        assert getattr(by_topic.stores, name).data == getattr(ordered.stores, name).data
    for name in ("changes", "triggers", "examples"):
        assert getattr(by_topic_out, name) == getattr(ordered_out, name), name


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(HISTORY) - 1), max_size=40))
def test_batch_boundaries_change_no_output(cuts: list[int]) -> None:
    records = arrival_by_topic(HISTORY)
    assert dump(*run(records, cuts=cuts)) == dump(*run(records, cuts=[]))


def test_an_event_older_than_the_dedup_window_is_stale_and_one_inside_it_counts() -> None:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    day = 200 * DAY_MS
    first = dict(event("clickstream", "page_view", day, "v1", channel="web"), customer_id="c1")
    engine.submit([first], Watermarks.up_to(day))
    # 8 days before the customer's latest event: past the 7-day dedup memory,
    # so it cannot be told from a replay of what was applied. Not applied.
    old = day - 8 * DAY_MS
    stale = dict(event("clickstream", "page_view", old, "v2", channel="web"), customer_id="c1")
    out = engine.submit([stale], Watermarks.up_to(day))
    assert out.counts["stale", "clickstream"] == 1
    assert engine.stores.profiles.get("c1")["lifetime"]["clickstream.page_view"] == 1
    # Days behind, but inside the memory: counted in its window.
    recent = day - 3 * DAY_MS
    fresh = dict(event("clickstream", "page_view", recent, "v3", channel="web"), customer_id="c1")
    out = engine.submit([fresh], Watermarks.up_to(day + DAY_MS))
    assert out.counts["stale", "clickstream"] == 0
    assert engine.stores.profiles.get("c1")["lifetime"]["clickstream.page_view"] == 2


def test_with_a_memory_past_the_windows_an_older_event_is_late_and_in_lifetime_only() -> None:
    profile = replace(CONFIG.profile, dedup_window_ms=200 * DAY_MS)
    engine = PartitionEngine(0, PartitionStores.in_memory(), replace(CONFIG, profile=profile))
    day = 200 * DAY_MS
    first = dict(event("clickstream", "page_view", day, "v1", channel="web"), customer_id="c1")
    engine.submit([first], Watermarks.up_to(day))
    old = day - 91 * DAY_MS  # outside the 90-day window
    late = dict(event("clickstream", "page_view", old, "v2", channel="web"), customer_id="c1")
    out = engine.submit([late], Watermarks.up_to(day))
    assert out.counts["late", "clickstream"] == 1
    profile_state = engine.stores.profiles.get("c1")
    assert profile_state["lifetime"]["clickstream.page_view"] == 2
    assert profile_state["late_events"] == 1


# A memory far shorter than a customer's history: replays must be caught by
# the applied-through window, not by remembering every id.
SHORT_MEMORY = replace(
    CONFIG, profile=replace(CONFIG.profile, dedup_capacity=16, dedup_window_ms=2 * DAY_MS)
)


def kept_state(engine: PartitionEngine) -> bytes:
    names = ("profiles", "population", "held", "identities")
    stores = {name: getattr(engine.stores, name).data for name in names}
    return orjson.dumps(stores, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=10, deadline=None)
@given(
    st.randoms(use_true_random=False),
    st.lists(st.integers(min_value=1, max_value=len(HISTORY) - 1), max_size=20),
)
def test_feeding_a_history_again_changes_nothing(rng: Any, cuts: list[int]) -> None:
    records = arrival_by_topic(HISTORY)
    per_customer = Counter(str(r["customer_id"]) for r in records if r.get("customer_id"))
    assert max(per_customer.values()) > 4 * SHORT_MEMORY.profile.dedup_capacity
    engine = PartitionEngine(0, PartitionStores.in_memory(), SHORT_MEMORY)
    last = max(int(r["ts"]) for r in records)
    once = Outputs()
    for start, end in itertools.pairwise([0, *sorted(set(cuts)), len(records)]):
        if records[start:end]:
            once.extend(engine.submit(records[start:end], Watermarks.up_to(last)))
    once.extend(engine.advance(Watermarks.up_to(last)))
    state = kept_state(engine)
    # The whole history again, in any order and batching, and a redelivered tail.
    again = [dict(r) for r in records] + [dict(r) for r in records[-50:]]
    rng.shuffle(again)
    twice = Outputs()
    for start in range(0, len(again), 97):
        twice.extend(engine.submit(again[start : start + 97], Watermarks.up_to(last)))
    twice.extend(engine.advance(Watermarks.up_to(last)))
    assert not twice.changes and not twice.triggers and not twice.examples
    assert kept_state(engine) == state
    refused = sum(n for (what, _), n in twice.counts.items() if what in ("duplicate", "stale"))
    identity = sum(1 for r in again if not r.get("customer_id") or r["type"] == "identify")
    assert refused == len(again) - identity
    profiles = engine.stores.profiles.data.values()  # type: ignore[attr-defined]
    assert all(len(m["ids"]) <= 16 for p in profiles for m in p["dedup"].values())


def test_held_events_wait_for_the_watermark_and_are_released_by_an_advance() -> None:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    day = 30 * DAY_MS
    order = dict(event("purchases", "order", day, "o1", amount=12.5), customer_id="c1")
    out = engine.submit([order], Watermarks(closing=day - DAY_MS, release=day - DAY_MS))
    assert out.counts["held", "purchases"] == 1
    assert out.counts["processed", "purchases"] == 0  # consumed, not yet processed
    assert engine.stores.profiles.get("c1") is None
    assert [e["event_id"] for e in engine.stores.held.get("c1")] == ["o1"]
    out = engine.advance(Watermarks(closing=day, release=day))
    assert out.counts["processed", "purchases"] == 1
    assert engine.stores.held.get("c1") is None
    assert engine.stores.profiles.get("c1")["lifetime"]["purchases.order"] == 1
    assert "held_customers" not in engine.stores.population.get("p0")
    assert any(change["dimension"] == "lifecycle" for change in out.changes)


def test_a_silent_customer_moves_through_the_lifecycle_at_its_deadlines() -> None:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    day = 10 * DAY_MS
    order = dict(event("purchases", "order", day, "o1", amount=40.0), customer_id="c1")
    engine.submit([order], Watermarks.up_to(day))
    moved: list[str] = []
    for days_later in range(1, 120, 3):
        now = day + days_later * DAY_MS
        out = engine.advance(Watermarks.up_to(now))
        moved += [c["to_segment"] for c in out.changes if c["dimension"] == "lifecycle"]
    assert moved == ["at_risk", "dormant", "churned"]


def test_erasure_removes_the_customer_from_every_store_of_the_partition() -> None:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    day = 30 * DAY_MS
    click = dict(event("clickstream", "page_view", day, "v1", channel="web"), customer_id="c1")
    later = dict(event("purchases", "order", day + DAY_MS, "o1", amount=5.0), customer_id="c1")
    engine.submit([click, later], Watermarks(closing=day, release=day))
    assert engine.stores.held.get("c1") and engine.stores.profiles.get("c1")
    engine_segments = engine.stores.profiles.get("c1")["segments"]
    out, erased = engine.erase_customer("c1", "r1", day + 5)
    assert erased == ["held_events", "profile", "deadline_entry", "deadline_entry"]
    assert [c["change_kind"] for c in out.changes][-1] == "customer_erased"
    assert {c["dimension"] for c in out.changes if c["change_kind"] == "exit"} == set(
        engine_segments
    )
    deadlines = engine.stores.deadlines.data  # type: ignore[attr-defined]
    assert all("c1" not in orjson.dumps(v).decode() for v in deadlines.values())
    assert engine.stores.held.get("c1") is None and engine.stores.profiles.get("c1") is None
    assert "held_customers" not in engine.stores.population.get("p0")
    out = engine.advance(Watermarks.up_to(day + 2 * DAY_MS))
    assert engine.stores.profiles.get("c1") is None and not out.changes


def test_anonymous_browsing_is_released_under_the_customer_at_identify() -> None:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    day = 5 * DAY_MS
    anonymous = event("clickstream", "page_view", day, "a1", channel="web", anonymous_id="x9")
    identify = event("clickstream", "identify", day + 1, "i1", anonymous_id="x9", customer_id="c7")
    out = engine.submit([dict(anonymous, customer_id=None)], Watermarks.up_to(day))
    assert out.counts["anonymous", "held"] == 1 and not out.rekeyed
    out = engine.submit([identify], Watermarks.up_to(day + 1))
    assert [(e["event_id"], e["customer_id"], e["stitched"]) for e in out.rekeyed] == [
        ("a1", "c7", True)
    ]


@settings(max_examples=15, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=200))
def test_any_interleaving_of_the_topics_gives_the_outputs_of_event_time_order(
    rng: Any, batch: int
) -> None:
    # Kafka keeps each topic partition's order, nothing across topics: any
    # merge of the three sequences is a possible reading.
    queues = {t: [r for r in HISTORY if r["topic"] == t] for t in TOPICS}
    merged: list[dict[str, Any]] = []
    while any(queues.values()):
        topic = rng.choice([t for t in TOPICS if queues[t]])
        merged.append(queues[topic].pop(0))
    in_order = sorted(HISTORY, key=lambda r: (int(r["ts"]), r["event_id"]))
    cuts = list(range(batch, len(merged), batch))
    assert dump(*run(merged, cuts)) == dump(*run(in_order, cuts=[]))


def test_a_population_that_lost_counted_values_is_repaired_not_a_reason_to_stop() -> None:
    # What a restore from a changelog cut between two tables leaves: profiles
    # that counted their values into a population that does not hold them.
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG)
    half = len(HISTORY) // 2
    first, rest = HISTORY[:half], HISTORY[half:]
    middle = max(int(r["ts"]) for r in first)
    engine.submit(first, Watermarks(closing=middle, release=middle))
    population = engine.stores.population.data  # type: ignore[attr-defined]
    assert any(p.get("clv_counted") is not None for p in profiles(engine).values())
    population.clear()
    before = Counter(quantiles.population_repairs)
    last = max(int(r["ts"]) for r in HISTORY)
    engine.submit(rest, Watermarks(closing=last, release=last))
    engine.advance(Watermarks(closing=last, release=last))
    repaired = Counter(quantiles.population_repairs) - before
    assert repaired["clv"] > 0 and repaired["rfm"] > 0
    # Each customer is counted at most once: the population never holds a
    # value no profile claims.
    (state,) = population.values()
    claimed = Counter(
        quantiles.bin_key("log", p["clv_counted"])
        for p in profiles(engine).values()
        if p.get("clv_counted") is not None
    )
    assert Counter(state["clv"]["bins"]) - claimed == Counter()
    assert state["clv"]["n"] <= sum(claimed.values())


def profiles(engine: PartitionEngine) -> dict[str, Any]:
    return engine.stores.profiles.data  # type: ignore[attr-defined,no-any-return]
