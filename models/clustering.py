"""Behavioural clustering that learns online, with stable ids and persona labels.

The estimator is River's :class:`river.cluster.KMeans` with a fixed number of
clusters, chosen against the alternatives' quirks (River 0.26.1):

* ``CluStream`` and ``DBSTREAM`` renumber clusters whenever they recluster,
  so a customer's segment id would change with no change in behaviour;
* ``STREAMKMeans`` raises on ``predict_one`` before its first reclustering;
* ``DenStream`` mis-expands clusters in 0.26.1;
* ``KMeans`` keeps ``n_clusters`` centres whose ids never change — a model
  update moves a centre, never permutes ids — and bounds the count. Its one
  trap, ``predict_one`` inserting random coordinates into a centre for a
  feature it has not seen (the centres are ``defaultdict`` s), is avoided by
  predicting here with plain reads of a fixed feature list, and every
  centre holds every feature from the moment it is seeded.

Three additions make it recover behavioural groups on a changing customer
base:

* **Weighted distance.** Each feature's squared difference counts
  :data:`CLUSTER_WEIGHTS` times (1 when unlisted). The weights are applied
  by scaling what ``KMeans`` sees by their square roots, so its own
  nearest-centre search uses the weighted distance; centroids are reported
  in feature units. The fixed scaling in :mod:`models.features` is shared
  with the churn model; these weights are the clustering's own.
* **Warm start.** ``KMeans`` starts from random centres, which leaves
  clusters empty or split on skewed data. The first ``warmup`` examples are
  buffered and the centres seeded by k-means++ on them (fixed seed), refined
  by a few Lloyd passes; then ``KMeans`` learns one example at a time.
* **Swaps.** Online k-means cannot leave a local optimum: once every centre
  has a group, a group that appears later (customers who just signed up)
  is absorbed by its nearest centre, while two centres may share one group.
  So every ``swap_every`` examples, on those examples alone, the centre whose
  removal costs least (its examples' extra squared distance to their second
  nearest centre) is tried elsewhere — at a few k-means++ draws, each
  refined by local Lloyd steps — and moved to the best of them if that
  lowers the examples' squared error by at least 2 % (:data:`_SWAP_GAIN`): the
  single-swap local search of Kanungo et al. (2004, "A local search
  approximation algorithm for k-means clustering"), with bounded memory. A
  centre that wins nothing is the cheapest to move, so starved centres are
  re-placed the same way. The moved centre keeps its id; its persona label
  follows its new centroid.

Each cluster's persona label is read off its centroid (:func:`persona_label`)
by absolute conditions (:data:`PERSONA_RULES`); a centroid that meets none is
labelled :data:`GENERAL_PERSONA`.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Final

from river import cluster

from models.features import FEATURES
from schemas.errors import ConfigError

# Weight of each feature's squared difference in the clustering distance
# (unlisted features weigh 1), from what each feature says about a
# customer's habits; checked on simulator seeds 7, 11, 13, 17, 19, 23 and 29,
# never on the held-out seed:
CLUSTER_WEIGHTS: Final[Mapping[str, float]] = {
    # Tells a newcomer (under 30 days) from an established customer with the
    # same habits; most customers sit at its cap, so at weight 1 it hardly
    # moves a distance.
    "tenure": 2.0,
    # Repeats days_since_order == 1 ("never ordered"); counted in full, the
    # 0/1 jump splits one group by whether it has ordered yet.
    "has_ordered": 0.5,
    # A week's events against the month's: week-to-week noise for anyone
    # with a handful of events a month.
    "activity_trend": 0.25,
    # A ratio of a few clicks to a few opens.
    "email_ctr": 0.5,
    # One of three views (with dissatisfaction and detraction) of the same
    # unhappiness, and the noisiest, from a few ticket texts.
    "negative_sentiment": 0.5,
    # A moment's state (tickets open now), not a habit.
    "open_tickets": 0.5,
}

# Swap search: tried positions per test, local Lloyd steps per position, and
# the least relative drop in squared error that moves a centre (so noise in
# one window does not move centres back and forth).
_SWAP_CANDIDATES: Final = 4
_SWAP_REFINE: Final = 2
_SWAP_GAIN: Final = 0.02


# Persona → the conditions a centroid (features in [0, 1], models.features)
# must meet to carry it: (features, ">=" or "<=", threshold), where the mean of
# the features is compared. Absolute, not ranked across clusters, so a persona
# appears only where the data has such a group; thresholds read as:
PERSONA_RULES: Final[Mapping[str, tuple[tuple[tuple[str, ...], str, float], ...]]] = {
    # ordered, about once a month or more (0.3 ≈ 0.93 a month), within the
    # last 36 days, mostly at full price
    "high_value_loyal": (
        (("has_ordered",), ">=", 0.5),
        (("orders_per_month",), ">=", 0.3),
        (("days_since_order",), "<=", 0.4),
        (("discount_share",), "<=", 0.5),
    ),
    # ordered, mostly with a discount
    "bargain_hunter": ((("has_ordered",), ">=", 0.5), (("discount_share",), ">=", 0.5)),
    # never ordered, yet visits (0.3 ≈ 2.8 sessions a month) and was seen in
    # the last 30 days
    "window_shopper": (
        (("has_ordered",), "<=", 0.5),
        (("sessions_per_month",), ">=", 0.3),
        (("days_since_seen",), "<=", 0.5),
    ),
    # first seen under 15 days ago, and seen in the last 30
    "new_explorer": ((("tenure",), "<=", 0.5), (("days_since_seen",), "<=", 0.5)),
    # tickets, complaints, low CSAT and negative ticket text, on average half
    # way to their caps
    "unhappy": (
        (
            ("tickets_per_month", "complaints_per_month", "dissatisfaction", "negative_sentiment"),
            ">=",
            0.5,
        ),
    ),
    # not seen for 30 days or more
    "fading": ((("days_since_seen",), ">=", 0.5),),
}
# The label of a cluster whose centroid meets no persona's conditions.
GENERAL_PERSONA: Final = "general"


def persona_fit(centroid: Mapping[str, float], persona: str) -> float:
    """How well a centroid meets a persona's conditions: the smallest margin
    over them, each as a share of the room between threshold and bound
    (negative: a condition is not met).

    >>> persona_fit({"days_since_seen": 0.75}, "fading")
    0.5
    >>> persona_fit({"days_since_seen": 0.25}, "fading") < 0
    True
    """
    margins = []
    for names, op, threshold in PERSONA_RULES[persona]:
        value = sum(centroid.get(name, 0.0) for name in names) / len(names)
        if op == ">=":
            margins.append((value - threshold) / (1.0 - threshold))
        else:
            margins.append((threshold - value) / threshold)
    return min(margins)


def persona_label(centroid: Mapping[str, float]) -> str:
    """The persona whose conditions the centroid meets with the widest margin,
    or :data:`GENERAL_PERSONA` when it meets none.

    A pure function of the centroid: a cluster's label moves only when its
    centroid crosses a threshold, and two clusters may share a persona.

    >>> persona_label({"has_ordered": 1.0, "discount_share": 0.9, "tenure": 1.0})
    'bargain_hunter'
    >>> persona_label({"has_ordered": 1.0, "discount_share": 0.2, "tenure": 1.0})
    'general'
    """
    fits = {persona: persona_fit(centroid, persona) for persona in PERSONA_RULES}
    best = max(PERSONA_RULES, key=lambda p: (fits[p], -list(PERSONA_RULES).index(p)))
    return best if fits[best] >= 0 else GENERAL_PERSONA


def persona_labels(centroids: Mapping[int, Mapping[str, float]]) -> dict[int, str]:
    """The persona label of every cluster (:func:`persona_label`).

    >>> c = {0: {"has_ordered": 1.0, "discount_share": 0.9, "tenure": 1.0},
    ...      1: {"has_ordered": 1.0, "days_since_seen": 0.9, "tenure": 1.0},
    ...      2: {"has_ordered": 1.0, "tenure": 1.0}}
    >>> persona_labels(c)
    {0: 'bargain_hunter', 1: 'fading', 2: 'general'}
    """
    return {i: persona_label(centroids[i]) for i in sorted(centroids)}


class Clusterer:
    """Online k-means over feature vectors: weighted, warm-started, with swaps and stable ids.

    Parameters
    ----------
    n_clusters
        Number of clusters, fixed for the model's life (ids ``0..n-1``).
    halflife
        How far a centre moves towards each example it wins (River's
        ``halflife``).
    warmup
        Examples buffered before the centres are seeded.
    seed
        Seed of the k-means++ seeding and of the swap search; the same
        examples give the same model.
    size_window
        Recent examples over which :attr:`sizes` counts cluster membership.
    swap_every
        Examples between two swap tests; each test looks at those examples.
    features
        The features clustered on, in a fixed order. A feature missing from
        an example counts as 0 in distances and leaves centres as they are;
        features not listed are ignored.
    weights
        Weight of each feature in the squared distance (1 when unlisted;
        every weight positive).

    Raises
    ------
    ConfigError
        If a weight is not positive.

    Examples
    --------
    >>> model = Clusterer(n_clusters=2, warmup=4, seed=1, features=("a",))
    >>> for v in (0.0, 0.1, 0.9, 1.0, 0.05, 0.95):
    ...     model.learn_one({"a": v})
    >>> model.predict_one({"a": 0.02}) != model.predict_one({"a": 0.97})
    True
    """

    def __init__(
        self,
        n_clusters: int = 6,
        halflife: float = 0.02,
        warmup: int = 300,
        seed: int = 42,
        size_window: int = 2000,
        swap_every: int = 500,
        features: Sequence[str] = FEATURES,
        weights: Mapping[str, float] = CLUSTER_WEIGHTS,
    ) -> None:
        if not all(w > 0 for w in weights.values()):
            raise ConfigError("clustering weights must be positive")
        self.n_clusters = n_clusters
        self.warmup = max(warmup, n_clusters)
        self.seed = seed
        self.features = tuple(features)
        self.scales = tuple(math.sqrt(weights.get(f, 1.0)) for f in self.features)
        self.kmeans = cluster.KMeans(n_clusters=n_clusters, halflife=halflife, seed=seed)
        self.buffer: list[list[float]] = []
        self.ready = False
        self.recent: deque[int] = deque(maxlen=size_window)
        self.swap_every = max(swap_every, 1)
        self.window: list[list[float]] = []
        self.swaps = 0
        self.examples = 0
        self._rng = random.Random(seed)  # noqa: S311 - model initialisation, not security
        # The centres as lists in feature order (scaled), read by predict_one;
        # kept equal to the KMeans centres after every change.
        self._centres: list[list[float]] = []

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn from one example (never mutates ``x``)."""
        self.examples += 1
        scaled = {f: x[f] * s for f, s in zip(self.features, self.scales, strict=True) if f in x}
        point = [scaled.get(f, 0.0) for f in self.features]
        if not self.ready:
            self.buffer.append(point)
            if len(self.buffer) >= self.warmup:
                self._seed_centres()
            return
        winner = self.kmeans.learn_predict_one(scaled)
        centre = self.kmeans.centers[winner]
        self._centres[winner] = [centre[f] for f in self.features]
        self.recent.append(winner)
        self.window.append(point)
        if len(self.window) >= self.swap_every:
            self._swap()
            self.window = []

    def predict_one(self, x: Mapping[str, float]) -> int | None:
        """The closest cluster's id, or ``None`` before the centres are seeded."""
        if not self.ready:
            return None
        point = [x.get(f, 0.0) * s for f, s in zip(self.features, self.scales, strict=True)]
        return _nearest(point, self._centres)

    def centroid(self, i: int) -> dict[str, float]:
        """Cluster ``i``'s centre in feature units (read without touching the model)."""
        return {
            f: c / s for f, c, s in zip(self.features, self._centres[i], self.scales, strict=True)
        }

    def centroids(self) -> dict[int, dict[str, float]]:
        """Every centre, by cluster id; empty before seeding."""
        return {i: self.centroid(i) for i in range(self.n_clusters)} if self.ready else {}

    @property
    def sizes(self) -> dict[int, int]:
        """Examples per cluster among the last ``size_window`` learned."""
        counts = Counter(self.recent)
        return {i: counts.get(i, 0) for i in range(self.n_clusters)} if self.ready else {}

    def _place(self, i: int, point: Sequence[float]) -> None:
        """Put centre ``i`` at ``point`` (scaled), in the KMeans model and here."""
        target = self.kmeans.centers[i]
        target.clear()
        target.update(zip(self.features, point, strict=True))
        self._centres[i] = list(point)

    def _seed_centres(self) -> None:
        points = self.buffer
        centres = _kmeans_plus_plus(points, self.n_clusters, self._rng)
        for _ in range(10):
            centres = _lloyd_step(points, centres)
        self._centres = [[] for _ in centres]
        for i, centre in enumerate(centres):
            self._place(i, centre)
        self.ready = True
        self.recent.extend(_nearest(p, self._centres) for p in points)
        self.buffer = []

    def _swap(self) -> None:
        """Move the least useful centre where it lowers the window's squared error most."""
        if self.n_clusters < 2:
            return
        points, centres = self.window, self._centres
        # Each point's squared distance to its nearest and second-nearest centre.
        nearest: list[int] = []
        first: list[float] = []
        second: list[float] = []
        for p in points:
            d = [math.dist(p, c) for c in centres]
            i = min(range(len(d)), key=d.__getitem__)
            d1 = d[i]
            d[i] = math.inf
            nearest.append(i)
            first.append(d1 * d1)
            second.append(min(d) ** 2)
        # What removing each centre would add to the squared error.
        cost = [0.0] * self.n_clusters
        for i, d1, d2 in zip(nearest, first, second, strict=True):
            cost[i] += d2 - d1
        out = min(range(self.n_clusters), key=lambda i: (cost[i], i))
        without = [d2 if i == out else d1 for i, d1, d2 in zip(nearest, first, second, strict=True)]
        if sum(without) <= 0:
            return
        error, target = _best_new_centre(points, without, self._rng)
        if error < sum(first) * (1 - _SWAP_GAIN):
            self._place(out, target)
            self.swaps += 1


def _best_new_centre(
    points: Sequence[Sequence[float]], without: Sequence[float], rng: random.Random
) -> tuple[float, list[float]]:
    """Where one more centre lowers the squared error most, and the error then.

    ``without`` is each point's squared distance to the centres that stay.
    Positions are drawn k-means++-style (a point with probability in
    proportion to ``without``) and refined by local Lloyd steps: the mean
    of the points the new centre would win.
    """
    best: tuple[float, list[float]] = (math.inf, [])
    for _ in range(_SWAP_CANDIDATES):
        candidate = list(points[rng.choices(range(len(points)), weights=without)[0]])
        for _ in range(_SWAP_REFINE):
            won = [
                p for p, w in zip(points, without, strict=True) if math.dist(p, candidate) ** 2 < w
            ]
            if not won:
                break
            candidate = _mean(won)
        error = sum(
            min(w, math.dist(p, candidate) ** 2) for p, w in zip(points, without, strict=True)
        )
        best = min(best, (error, candidate))
    return best


def _nearest(point: Sequence[float], centres: Sequence[Sequence[float]]) -> int:
    """Index of the closest centre (the lowest on ties)."""
    best, best_distance = 0, math.inf
    for i, centre in enumerate(centres):
        distance = math.dist(point, centre)
        if distance < best_distance:
            best, best_distance = i, distance
    return best


def _mean(points: Sequence[Sequence[float]]) -> list[float]:
    return [sum(column) / len(points) for column in zip(*points, strict=True)]


def _kmeans_plus_plus(
    points: Sequence[Sequence[float]], k: int, rng: random.Random
) -> list[list[float]]:
    centres = [list(points[rng.randrange(len(points))])]
    while len(centres) < k:
        weights = [min(math.dist(p, c) for c in centres) ** 2 for p in points]
        if sum(weights) == 0:
            centres.append(list(points[rng.randrange(len(points))]))
            continue
        centres.append(list(rng.choices(points, weights=weights)[0]))
    return centres


def _lloyd_step(points: Sequence[Sequence[float]], centres: list[list[float]]) -> list[list[float]]:
    groups: list[list[Sequence[float]]] = [[] for _ in centres]
    for p in points:
        groups[_nearest(p, centres)].append(p)
    return [_mean(g) if g else c for g, c in zip(groups, centres, strict=True)]
