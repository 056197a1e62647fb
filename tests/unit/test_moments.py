"""Model moments, delayed churn labels and the deadline index (no broker)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.deadlines import DeadlineIndex, DictStore
from models.features import FEATURES, MISSING, feature_vector
from models.moments import MAX_PENDING, Moments
from models.pipeline import fire_deadlines, new_population, refile_deadline, update_customer
from models.profile import DAY_MS, ProfileConfig, event
from models.training import ModelBundle, ModelConfig

CONFIG = ProfileConfig()
H = 30 * DAY_MS


def moments() -> Moments:
    return Moments(ModelBundle(ModelConfig(horizon_days=30)), H, CONFIG, b"k")


def run(events: list[dict[str, Any]], watermarks: list[int]) -> list[dict[str, Any]]:
    """Feed one customer's events, firing deadlines at the given watermarks after each."""
    m = moments()
    index = DeadlineIndex(DictStore(), 0, DAY_MS)
    profiles: dict[str, Any] = {}
    population = new_population()
    for e, watermark in zip(events, watermarks, strict=True):
        profile, _ = update_customer(
            profiles.get("c1"), [e], population, CONFIG, None, None, "c1", m
        )
        profiles["c1"] = profile
        refile_deadline(index, "c1", profile, m)
        fire_deadlines(index, watermark, profiles.get, m)
    return m.examples


def order(day: float, n: int) -> dict[str, Any]:
    return event("purchases", "order", int(day * DAY_MS), f"o{n}", amount=40.0)


def view(day: float, n: int) -> dict[str, Any]:
    return event("clickstream", "page_view", int(day * DAY_MS), f"v{n}", channel="web")


def test_a_purchase_within_the_horizon_labels_zero_but_resolves_at_the_horizon() -> None:
    events = [order(0, 1), view(8, 2), order(20, 3)]
    # Scored at the day-7 and day-15 quiet ticks (the day-8 visit is within a
    # week of the first); the order at day
    # 20 decides both labels, yet nothing reaches the trainer before the horizon.
    assert not [e for e in run(events, [e["ts"] for e in events]) if e["kind"] == "churn"]
    examples = run(events, [0, 8 * DAY_MS, 46 * DAY_MS])
    churn = {e["ts"]: e for e in examples if e["kind"] == "churn"}
    assert sorted(churn) == [37 * DAY_MS, 45 * DAY_MS]
    assert churn[37 * DAY_MS]["y"] == 0 and churn[45 * DAY_MS]["y"] == 0
    assert churn[37 * DAY_MS]["x"]["has_ordered"] == 1.0


def test_snapshots_are_spaced_so_the_pending_bound_drops_no_label() -> None:
    # Horizon 90 days: weekly moments would be 13 pending; they are spaced to
    # H / (MAX_PENDING - 1) so at most MAX_PENDING wait, buyer or silent alike.
    m = Moments(ModelBundle(ModelConfig(horizon_days=90)), 90 * DAY_MS, CONFIG, b"k")
    population = new_population()
    profile, _ = update_customer(None, [order(0, 1)], population, CONFIG, None, None, "c1", m)
    for day in range(7, 90, 7):
        profile, _ = update_customer(
            profile, [view(day, day)], population, CONFIG, None, None, "c1", m
        )
    assert profile is not None
    scored = [p["scored_ms"] for p in profile["churn_pending"]]
    # Every other weekly visit: 12.9 days apart is the least spacing allowed.
    assert scored == [day * DAY_MS for day in range(7, 90, 14)]
    assert len(scored) <= MAX_PENDING


def test_a_quiet_customer_resolves_to_one_when_the_watermark_passes_the_horizon() -> None:
    # One order, then silence; other customers move the watermark on.
    events = [order(0, 1), view(8, 2)]
    examples = run(events, [0, 90 * DAY_MS])
    churn = [e for e in examples if e["kind"] == "churn"]
    assert churn and all(e["y"] == 1 for e in churn)
    # Quiet ticks were taken weekly after the last event, as moments.
    ticks = sorted(e["ts"] for e in examples if e["kind"] == "cluster")
    assert {8 * DAY_MS + w * 7 * DAY_MS for w in range(1, 12)} <= set(ticks)


def test_labels_do_not_depend_on_when_the_watermark_advances() -> None:
    events = [order(0, 1), view(3, 2), view(9, 3), order(50, 4), view(95, 5)]
    live = run(events, [0, 0, 9 * DAY_MS, 50 * DAY_MS, 95 * DAY_MS])
    replay = run(events, [e["ts"] for e in events])
    key = lambda e: (e["example_id"], e.get("y"))  # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, replay))


def test_example_ids_are_deterministic_and_carry_no_customer_id() -> None:
    a = run([order(0, 1), view(8, 2)], [0, 8 * DAY_MS])
    b = run([order(0, 1), view(8, 2)], [0, 8 * DAY_MS])
    assert [e["example_id"] for e in a] == [e["example_id"] for e in b]
    assert all("c1" not in str(e) for e in a)


def test_deadline_index_reads_only_the_buckets_the_watermark_passed() -> None:
    store = DictStore()
    index = DeadlineIndex(store, 3, bucket_ms=10)
    index.schedule("a", 15)
    index.schedule("b", 95)
    index.unschedule("b", 95)
    index.schedule("c", 1000)
    assert index.pop_due(20) == [(15, "a")]
    assert index.pop_due(500) == []
    assert store.get("3:from") == 51
    assert index.pop_due(1000) == [(1000, "c")]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("sup"), st.integers(0, 2_000), st.sampled_from("abc")),
        max_size=40,
    )
)
def test_the_deadline_index_floor_is_never_after_an_entry(
    ops: list[tuple[str, int, str]],
) -> None:
    store = DictStore()
    index = DeadlineIndex(store, 0, bucket_ms=100)
    popped: list[tuple[int, str]] = []
    for op, at, customer in ops:
        if op == "s":
            index.schedule(customer, at)
        elif op == "u":
            index.unschedule(customer, at)
        else:
            due = index.pop_due(at)
            assert all(d <= at for d, _ in due)
            popped += due
        floor = index.floor_ms()
        entries = [
            e[0] for key, bucket in store.data.items() if key[-5:] != ":from" for e in bucket
        ]
        if entries:
            # Nothing due before the floor is ever skipped, kept or read afresh.
            read = DeadlineIndex(store, 0, bucket_ms=100).floor_ms()
            assert floor is not None and read is not None
            assert max(floor, read) <= min(entries)
        if op == "p":
            # Right after a pop, the floor is read again: as late as the store allows.
            assert floor == DeadlineIndex(store, 0, bucket_ms=100).floor_ms()


def test_features_are_bounded_complete_and_neutral_when_missing() -> None:
    profile, _ = update_customer(None, [view(0, 1)], new_population(), CONFIG)
    assert profile is not None
    x = feature_vector(profile, CONFIG, 10 * DAY_MS)
    assert list(x) == list(FEATURES)
    assert all(0.0 <= v <= 1.0 for v in x.values())
    for name in ("aov", "discount_share", "dissatisfaction", "detraction"):
        assert x[name] == MISSING[name]
    assert x["has_ordered"] == 0.0 and x["days_since_order"] == 1.0


def test_sampling_keeps_a_deterministic_share_of_examples_and_every_label() -> None:
    def feed(rate: float) -> tuple[Moments, dict[str, Any]]:
        m = Moments(ModelBundle(ModelConfig(horizon_days=30)), H, CONFIG, b"k", sample_rate=rate)
        profiles: dict[str, Any] = {}
        population = new_population()
        for c in range(300):
            customer = f"c{c}"
            for day in (0, 8, 16, 60):
                e = order(day, c * 10 + day) if day in (0, 60) else view(day, c * 10 + day)
                profiles[customer], _ = update_customer(
                    profiles.get(customer), [e], population, CONFIG, None, None, customer, m
                )
        return m, profiles

    everything, all_profiles = feed(1.0)
    quarter, quarter_profiles = feed(0.25)
    ids = {e["example_id"] for e in quarter.examples}
    # The same examples a full run makes, thinned by id: a replay keeps the same ones.
    assert ids == {e["example_id"] for e in everything.examples if quarter.sampled(e["example_id"])}
    assert 0.18 < len(ids) / len(everything.examples) < 0.32
    # Moments and pending labels are the same for everyone; only examples are thinned.
    assert quarter_profiles == all_profiles
