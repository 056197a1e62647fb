"""Histogram sketches with exact deletions, and RFM quintile scores from them."""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from models.quantiles import (
    LOG_BINS_MAX,
    Binning,
    RfmValues,
    Sketch,
    SketchError,
    merge_sketches,
    new_rfm_population,
    new_sketch,
    quintile_score,
    rfm_scores,
    rfm_update,
    sketch_add,
    sketch_rank,
    sketch_remove,
)

N = 10_000
GENERATORS: dict[Binning, Callable[[random.Random], float]] = {
    "day": lambda rng: rng.randint(18_000, 19_100),
    "count": lambda rng: int(rng.paretovariate(1.2)),
    "log": lambda rng: rng.lognormvariate(3.5, 1.0),
}


def sketch_of(binning: Binning, values: list[float]) -> Sketch:
    sketch = new_sketch(binning)
    for value in values:
        sketch_add(sketch, value)
    return sketch


def roundtrip(state: object) -> Any:
    """What a Faust table with JSON values stores and gives back."""
    return orjson.loads(orjson.dumps(state))


def sketch_ranks(sketch: Sketch, values: list[float]) -> list[float]:
    # Equal values have equal ranks, so each distinct value is ranked once.
    ranks = {value: sketch_rank(sketch, value) for value in set(values)}
    return [ranks[value] for value in values]


def exact_mid_ranks(values: list[float]) -> list[float]:
    counts = Counter(values)
    below: dict[float, int] = {}
    running = 0
    for value in sorted(counts):
        below[value] = running
        running += counts[value]
    return [(below[v] + 0.5 * counts[v]) / len(values) for v in values]


def exact_sorted_quintiles(values: list[float]) -> list[int]:
    """Quintile of each item by its position in the sorted data (ties in input order)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    scores = [0] * len(values)
    for position, index in enumerate(order):
        scores[index] = quintile_score((position + 0.5) / len(values))
    return scores


@pytest.mark.parametrize("binning", ["day", "count", "log"])
def test_remove_is_the_exact_inverse_of_add_also_after_a_json_round_trip(binning: Binning) -> None:
    rng = random.Random(1)
    sketch = sketch_of(binning, [GENERATORS[binning](rng) for _ in range(500)])
    edge_values: dict[Binning, list[float]] = {
        "day": [-3, 0, 10**6],
        "count": [0, 200, 201, 10**9],
        "log": [-5.0, 0.0, 1e-9],
    }
    for value in [GENERATORS[binning](rng) for _ in range(50)] + edge_values[binning]:
        before = copy.deepcopy(sketch)
        sketch_add(sketch, value)
        sketch_remove(sketch, value)
        assert sketch == before
        restored = roundtrip(sketch)
        assert restored == sketch
        sketch_add(restored, value)
        restored = roundtrip(restored)
        sketch_remove(restored, value)
        assert restored == before


def test_removing_a_value_never_added_raises_and_changes_nothing() -> None:
    sketch = sketch_of("log", [10.0, 20.0])
    before = copy.deepcopy(sketch)
    with pytest.raises(SketchError):
        sketch_remove(sketch, 5_000.0)
    with pytest.raises(ValueError):  # SketchError is a ValueError too
        sketch_remove(new_sketch("day"), 3)
    assert sketch == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(SketchError):
        sketch_add(new_sketch("log"), bad)


def test_negative_counts_and_unknown_binnings_are_rejected() -> None:
    with pytest.raises(SketchError):
        sketch_add(new_sketch("count"), -1)
    with pytest.raises(SketchError):
        new_sketch("weeks")  # type: ignore[arg-type]


@pytest.mark.parametrize("binning", ["day", "count"])
def test_exact_binnings_give_the_exact_mid_rank_of_every_item(binning: Binning) -> None:
    rng = random.Random(2)
    values = [float(min(GENERATORS[binning](rng), 200)) for _ in range(N)]
    sketch = sketch_of(binning, values)
    for rank, exact in zip(sketch_ranks(sketch, values), exact_mid_ranks(values), strict=True):
        assert rank == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("binning", ["day", "count", "log"])
def test_quintiles_match_exact_sorted_quintiles_for_95_percent_of_items(binning: Binning) -> None:
    rng = random.Random(3)
    if binning == "count":
        # Half in the exact range (1..200), half in the log-spaced bins above it.
        values = [float(int(10 ** rng.uniform(0.0, 4.5))) for _ in range(N)]
    else:
        values = [float(GENERATORS[binning](rng)) for _ in range(N)]
    sketch = sketch_of(binning, values)
    estimated = [quintile_score(rank) for rank in sketch_ranks(sketch, values)]
    exact = exact_sorted_quintiles(values)
    agree = sum(e == x for e, x in zip(estimated, exact, strict=True)) / N
    assert agree >= 0.95
    assert max(abs(e - x) for e, x in zip(estimated, exact, strict=True)) <= 1


def test_tied_values_share_one_score() -> None:
    values = [1.0] * 600 + [2.0] * 200 + [3.0] * 200
    sketch = sketch_of("count", values)
    assert {quintile_score(sketch_rank(sketch, v)) for v in values[:600]} == {2}


@pytest.mark.parametrize("binning", ["day", "count", "log"])
def test_merge_of_two_sketches_equals_the_sketch_of_the_union(binning: Binning) -> None:
    rng = random.Random(4)
    left = [GENERATORS[binning](rng) for _ in range(2_000)]
    right = [GENERATORS[binning](rng) for _ in range(3_000)]
    a, b = sketch_of(binning, left), sketch_of(binning, right)
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    assert merge_sketches([a, b]) == sketch_of(binning, left + right)
    assert merge_sketches(iter([a])) == a
    assert (a, b) == (a_before, b_before)


def test_merge_rejects_mixed_binnings_and_nothing() -> None:
    with pytest.raises(SketchError):
        merge_sketches([new_sketch("day"), new_sketch("log")])
    with pytest.raises(SketchError):
        merge_sketches([])


def random_population(rng: random.Random, customers: int) -> dict[str, Sketch]:
    population = new_rfm_population()
    for _ in range(customers):
        rfm_update(
            population,
            None,
            RfmValues(
                rng.randint(18_000, 19_000), 1 + int(rng.expovariate(0.5)), rng.lognormvariate(4, 1)
            ),
        )
    return population


def test_scores_are_monotone_in_each_input() -> None:
    population = random_population(random.Random(5), 2_000)
    base = RfmValues(18_500, 3, 60.0)
    days = [
        rfm_scores(population, RfmValues(d, base.orders, base.revenue))[0]
        for d in range(17_990, 19_020, 5)
    ]
    orders = [
        rfm_scores(population, RfmValues(base.last_order_day, o, base.revenue))[1]
        for o in range(40)
    ]
    revenue = [
        rfm_scores(population, RfmValues(base.last_order_day, base.orders, m))[2]
        for m in [-10.0, 0.0] + [1.1**k for k in range(120)]
    ]
    for scores in (days, orders, revenue):
        assert scores == sorted(scores)
        assert scores[0] == 1
        assert scores[-1] == 5


def test_empty_population_scores_three_in_every_dimension() -> None:
    assert rfm_scores(new_rfm_population(), RfmValues(19_000, 4, 120.0)) == (3, 3, 3)


def test_customer_moves_and_erasure_keep_the_population_exact() -> None:
    rng = random.Random(6)
    population = random_population(rng, 300)
    before = copy.deepcopy(population)
    old = RfmValues(18_100, 1, 25.0)
    new = RfmValues(18_990, 2, 140.0)
    rfm_update(population, None, old)
    low = rfm_scores(population, old)
    population = roundtrip(population)  # as a Faust table stores it between events
    rfm_update(population, old, new)
    high = rfm_scores(population, new)
    assert all(h > lo for h, lo in zip(high, low, strict=True))
    rfm_update(population, new, None)  # the customer is erased
    assert population == before


def test_update_with_values_never_counted_changes_nothing() -> None:
    population = random_population(random.Random(7), 50)
    before = copy.deepcopy(population)
    with pytest.raises(SketchError):
        rfm_update(population, RfmValues(1, 9_999, 1e9), RfmValues(2, 1, 1.0))
    assert population == before


def test_state_stays_bounded_for_a_million_revenue_values() -> None:
    rng = random.Random(8)
    sketch = new_sketch("log")
    uniform = rng.random
    for _ in range(1_000_000):
        # Spread over 24 decades, wider than the bins' range, so every bin fills.
        sketch_add(sketch, 10.0 ** (24.0 * uniform() - 9.0))
    assert sketch["n"] == 1_000_000
    assert len(sketch["bins"]) <= LOG_BINS_MAX
    assert len(orjson.dumps(sketch)) < 16_000
