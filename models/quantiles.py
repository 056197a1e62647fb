"""Streaming distribution sketches with exact deletions, and RFM quintile scores.

RFM scores R, F and M from 1 to 5 by quintile across the customer base
(``docs/definitions.md``). Sorting every customer on each update is out of the
question, and a customer's values change over time, so each dimension keeps a
*histogram sketch*: fixed bins with counts. Adding a value increments its
bin, removing one decrements it, so removing a customer's old value and adding
the new one is exact, and two sketches merge by summing counts (a worker sees
the per-partition sketches of all its partitions).

Bins (``Binning``):

* ``"day"`` — one bin per integer day index (values are floored): exact.
  Used for the day of the last order, whose rank is the R score.
* ``"count"`` — one bin per integer 0..200 (exact; values are floored), then
  32 log-spaced bins per decade above 200. Used for the number of orders.
* ``"log"`` — 32 log-spaced bins per decade (each about 7.5 % wide) for
  positive values, and one bin ``"z"`` for values ≤ 0, ordered below all
  others. Used for revenue. Values outside [1e-6, 1e12] share the edge bins,
  so a sketch never holds more than ``LOG_BINS_MAX`` bins.

A value's *rank* is the mid-rank of its bin: (count below + half the count in
its bin) / n. Equal values therefore always share a score — with many
one-order customers, every one of them gets the same F — and within the
exact binnings the rank is the exact mid-rank of the value in the population.
With no customers at all the rank is 0.5, which scores 3 (the middle).

The state is a plain dict — ``{"binning": ..., "n": ..., "bins": {key:
count}}`` with string bin keys — so it round-trips through JSON unchanged.

>>> population = new_rfm_population()
>>> customers = [(100, 1, 20.0), (120, 2, 40.0), (150, 1, 15.0), (160, 3, 95.0), (170, 8, 410.0)]
>>> for day, orders, revenue in customers:
...     rfm_update(population, None, RfmValues(day, orders, revenue))
>>> rfm_scores(population, RfmValues(170, 8, 410.0))
(5, 5, 5)
>>> rfm_scores(population, RfmValues(100, 1, 20.0))
(1, 2, 2)

The customer of day 100 orders again on day 180 for 30.0; the old values
leave the sketches and the new ones enter:

>>> rfm_update(population, RfmValues(100, 1, 20.0), RfmValues(180, 2, 50.0))
>>> rfm_scores(population, RfmValues(180, 2, 50.0))
(5, 3, 3)
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from models.state import Binning as Binning  # declared in models.state, re-exported
from models.state import RfmPopulation as RfmPopulation
from models.state import Sketch as Sketch
from schemas.errors import SegstreamError

RfmDimension = Literal["r", "f", "m"]

BINS_PER_DECADE: Final = 32
COUNT_EXACT_MAX: Final = 200
LOG_MIN_EXPONENT: Final = -6
LOG_MAX_EXPONENT: Final = 12
LOG_BINS_MAX: Final = BINS_PER_DECADE * (LOG_MAX_EXPONENT - LOG_MIN_EXPONENT) + 2
ZERO_KEY: Final = "z"
EMPTY_RANK: Final = 0.5

_LOG_INDEX_MIN: Final = BINS_PER_DECADE * LOG_MIN_EXPONENT
_LOG_INDEX_MAX: Final = BINS_PER_DECADE * LOG_MAX_EXPONENT


class SketchError(SegstreamError, ValueError):
    """A sketch operation that would corrupt the state (bad value, unknown
    binning, removing a value that was never added, mixing binnings)."""


@dataclass(frozen=True, slots=True)
class RfmValues:
    """One customer's RFM inputs.

    Parameters
    ----------
    last_order_day
        UTC day index (days since the epoch) of the last order.
    orders
        Lifetime number of orders.
    revenue
        Lifetime revenue (≤ 0 after refunds counts as the lowest bin).
    """

    last_order_day: int
    orders: int
    revenue: float


def new_sketch(binning: Binning) -> Sketch:
    """An empty sketch.

    >>> new_sketch("log")
    {'binning': 'log', 'n': 0, 'bins': {}}
    """
    if binning not in get_args(Binning):
        raise SketchError(f"unknown binning {binning!r}; expected one of {get_args(Binning)}")
    return {"binning": binning, "n": 0, "bins": {}}


def _log_index(value: float) -> int:
    index = math.floor(BINS_PER_DECADE * math.log10(value))
    return min(max(index, _LOG_INDEX_MIN), _LOG_INDEX_MAX)


def bin_key(binning: str, value: float) -> str:
    """The key of the bin that holds ``value``.

    >>> bin_key("day", 19_000.7), bin_key("count", 250), bin_key("log", 100.0), bin_key("log", 0)
    ('19000', '204', '64', 'z')
    """
    if not math.isfinite(value):
        raise SketchError(f"cannot sketch a non-finite value: {value!r}")
    if binning == "day":
        return str(math.floor(value))
    if binning == "count":
        if value < 0:
            raise SketchError(f"a count cannot be negative: {value!r}")
        count = math.floor(value)
        if count <= COUNT_EXACT_MAX:
            return str(count)
        # Above the exact range: log-spaced bins, numbered on from 201.
        return str(COUNT_EXACT_MAX + 1 + _log_index(count / (COUNT_EXACT_MAX + 1)))
    if binning == "log":
        return ZERO_KEY if value <= 0 else str(_log_index(value))
    raise SketchError(f"unknown binning {binning!r}; expected one of {get_args(Binning)}")


def sketch_add(sketch: Sketch, value: float) -> None:
    """Count ``value`` into the sketch (in place)."""
    key = bin_key(sketch["binning"], value)
    bins: dict[str, int] = sketch["bins"]
    bins[key] = bins.get(key, 0) + 1
    sketch["n"] += 1


def sketch_remove(sketch: Sketch, value: float) -> None:
    """Take ``value`` out of the sketch (in place): the exact inverse of :func:`sketch_add`.

    An emptied bin is deleted, so add-then-remove leaves the state equal to
    what it was. Removing from an empty bin raises :class:`SketchError` and
    changes nothing.
    """
    key = bin_key(sketch["binning"], value)
    bins: dict[str, int] = sketch["bins"]
    count = bins.get(key, 0)
    if count <= 0:
        raise SketchError(f"cannot remove a value from empty bin {key!r}")
    if count == 1:
        del bins[key]
    else:
        bins[key] = count - 1
    sketch["n"] -= 1


def sketch_discard(sketch: Sketch, value: float) -> bool:
    """Take ``value`` out if the sketch holds its bin; ``False``, and no change, if not.

    >>> sketch = new_sketch("count")
    >>> sketch_add(sketch, 2)
    >>> sketch_discard(sketch, 2), sketch_discard(sketch, 2), sketch["n"]
    (True, False, 0)
    """
    if sketch["bins"].get(bin_key(sketch["binning"], value), 0) <= 0:
        return False
    sketch_remove(sketch, value)
    return True


# Values a profile had counted that its partition's population did not hold,
# by sketch, since the process started (see note_population_repair).
population_repairs: Counter[str] = Counter()
_log = logging.getLogger(__name__)


def note_population_repair(what: str) -> None:
    """Count a value the population should have held and did not; log now and then.

    A partition's population and its profiles are written at each commit
    together, and a worker killed in between restores both from the
    changelog (:mod:`streams.state_cache`). Should they still disagree, the
    customer is counted afresh instead of stopping the worker on every
    batch; the counts show how often (``segstream_population_repairs``).
    """
    population_repairs[what] += 1
    seen = population_repairs[what]
    if seen & (seen - 1) == 0:  # the 1st, 2nd, 4th, 8th ... time
        _log.warning(
            "a customer's counted value was missing from the population's %s sketch "
            "(%d times since start): counted afresh",
            what,
            seen,
        )


def rfm_recount(population: RfmPopulation, old: RfmValues | None, new: RfmValues | None) -> None:
    """:func:`rfm_update`, counting ``new`` afresh if ``old`` was never counted."""
    try:
        rfm_update(population, old, new)
    except SketchError:
        if old is None:
            raise
        note_population_repair("rfm")
        rfm_update(population, None, new)


def sketch_rank(sketch: Mapping[str, Any], value: float) -> float:
    """Mid-rank CDF of ``value`` in [0, 1]; ``EMPTY_RANK`` (0.5) for an empty sketch.

    Costs one pass over the bins (at most ``LOG_BINS_MAX`` for ``"log"``; for
    ``"day"``, the number of distinct days in the population).

    >>> sketch = new_sketch("count")
    >>> for orders in (1, 1, 2, 5):
    ...     sketch_add(sketch, orders)
    >>> sketch_rank(sketch, 1), sketch_rank(sketch, 2), sketch_rank(sketch, 3)
    (0.25, 0.625, 0.75)
    """
    n: int = sketch["n"]
    if n == 0:
        return EMPTY_RANK
    bins: Mapping[str, int] = sketch["bins"]
    key = bin_key(sketch["binning"], value)
    same = bins.get(key, 0)
    below = 0
    if key != ZERO_KEY:
        target = int(key)
        for k, count in bins.items():  # (a loop: the hottest line of a decision)
            if k == ZERO_KEY or int(k) < target:
                below += count
    return (below + 0.5 * same) / n


def quintile_score(rank: float) -> int:
    """Score 1..5 of a rank in [0, 1]: ``1 + min(4, int(rank * 5))``.

    >>> [quintile_score(r) for r in (0.0, 0.19, 0.2, 0.5, 0.99, 1.0)]
    [1, 1, 2, 3, 5, 5]
    """
    return 1 + min(4, max(0, int(rank * 5)))


def merge_sketches(sketches: Iterable[Mapping[str, Any]]) -> Sketch:
    """A new sketch whose counts are the sums of ``sketches`` (all of one binning).

    >>> a, b = new_sketch("day"), new_sketch("day")
    >>> sketch_add(a, 10); sketch_add(b, 10); sketch_add(b, 12)
    >>> merge_sketches([a, b])
    {'binning': 'day', 'n': 3, 'bins': {'10': 2, '12': 1}}
    """
    parts = list(sketches)
    if not parts:
        raise SketchError("merge_sketches needs at least one sketch")
    binnings = {part["binning"] for part in parts}
    if len(binnings) != 1:
        raise SketchError(f"cannot merge sketches of different binnings: {sorted(binnings)}")
    merged = new_sketch(parts[0]["binning"])
    bins: dict[str, int] = merged["bins"]
    for part in parts:
        for key, count in part["bins"].items():
            bins[key] = bins.get(key, 0) + count
        merged["n"] += part["n"]
    return merged


def new_rfm_population() -> RfmPopulation:
    """Empty sketches for R (last-order day), F (orders) and M (revenue)."""
    return {"r": new_sketch("day"), "f": new_sketch("count"), "m": new_sketch("log")}


def _dimensions(values: RfmValues) -> tuple[tuple[RfmDimension, float], ...]:
    return (("r", values.last_order_day), ("f", values.orders), ("m", values.revenue))


def rfm_update(population: RfmPopulation, old: RfmValues | None, new: RfmValues | None) -> None:
    """Replace a customer's values in the population sketches (in place).

    Parameters
    ----------
    population
        From :func:`new_rfm_population`.
    old
        The customer's values as last counted, or ``None`` for a new customer.
    new
        The customer's values now, or ``None`` when the customer is erased.

    Raises
    ------
    SketchError
        If ``old`` was never counted; the population is then left unchanged.
    """
    if old is not None:
        # Check all three before touching any, so a bad call changes nothing.
        for dim, value in _dimensions(old):
            sketch = population[dim]
            if sketch["bins"].get(bin_key(sketch["binning"], value), 0) <= 0:
                raise SketchError(f"old RFM values were never counted (dimension {dim!r})")
        for dim, value in _dimensions(old):
            sketch_remove(population[dim], value)
    if new is not None:
        for dim, value in _dimensions(new):
            bin_key(population[dim]["binning"], value)  # validate all before adding any
        for dim, value in _dimensions(new):
            sketch_add(population[dim], value)


def rfm_ranks(population: Mapping[str, Any], values: RfmValues) -> tuple[float, float, float]:
    """Mid-ranks of the customer's R, F and M in the population (the scores' reasons)."""
    return (
        sketch_rank(population["r"], values.last_order_day),
        sketch_rank(population["f"], values.orders),
        sketch_rank(population["m"], values.revenue),
    )


def rfm_scores(population: Mapping[str, Any], values: RfmValues) -> tuple[int, int, int]:
    """R, F and M scores 1..5; 5 is best: most recent, most orders, most revenue.

    A later last-order day ranks higher, so recency needs no inversion. With
    an empty population every score is 3.
    """
    r, f, m = rfm_ranks(population, values)
    return quintile_score(r), quintile_score(f), quintile_score(m)
