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
  predicting here with plain reads, and our feature vectors always carry
  every feature (:mod:`models.features`).

River's ``KMeans`` starts from random centres, which leaves clusters empty
or split on skewed data. :class:`Clusterer` therefore buffers the first
``warmup`` examples, seeds the centres with k-means++ on them (fixed seed),
refines them with a few Lloyd passes, and only then lets ``KMeans`` learn
one example at a time.

Each cluster's persona label is read off its centroid (:func:`persona_labels`).
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Final

from river import cluster

from models.features import FeatureVector

# Recent examples kept to re-place a starved centre, and what counts as starved.
_LATEST: Final = 500
_STARVED_SHARE: Final = 0.01

# Persona → (weight per feature) scoring how well a centroid fits the persona.
# A positive weight means "high in this persona"; scores are compared across
# clusters after standardising each persona's scores, so no persona wins
# only because its features have a larger range.
PERSONA_SIGNATURES: Final[Mapping[str, Mapping[str, float]]] = {
    "high_value_loyal": {"orders_per_month": 1.0, "aov": 1.0, "discount_share": -0.5},
    "bargain_hunter": {"discount_share": 1.5, "email_ctr": 0.5, "aov": -0.5},
    "window_shopper": {"sessions_per_month": 1.0, "pages_per_session": 0.5, "has_ordered": -1.0},
    "new_explorer": {"tenure": -1.5, "activity_trend": 0.5},
    "unhappy": {
        "dissatisfaction": 1.0,
        "tickets_per_month": 1.0,
        "complaints_per_month": 1.0,
        "negative_sentiment": 1.0,
        "refund_share": 0.5,
    },
    "fading": {"days_since_seen": 1.5, "activity_trend": -1.0},
}


def persona_labels(centroids: Mapping[int, Mapping[str, float]]) -> dict[int, str]:
    """A distinct persona label per cluster, read from its centroid.

    Each persona scores every centroid by its signature; scores are
    standardised per persona across clusters; then the best (cluster,
    persona) pairs are taken greedily, each persona once. Clusters left over
    (more clusters than personas) take their best persona with a suffix.

    >>> c = {0: {"discount_share": 0.9, "days_since_seen": 0.0},
    ...      1: {"discount_share": 0.1, "days_since_seen": 0.9}}
    >>> persona_labels(c)
    {0: 'bargain_hunter', 1: 'fading'}
    """
    if not centroids:
        return {}
    ids = sorted(centroids)
    scores: dict[tuple[int, str], float] = {}
    for persona, signature in PERSONA_SIGNATURES.items():
        raw = [sum(w * centroids[i].get(f, 0.0) for f, w in signature.items()) for i in ids]
        mean = sum(raw) / len(raw)
        spread = math.sqrt(sum((r - mean) ** 2 for r in raw) / len(raw)) or 1.0
        for i, r in zip(ids, raw, strict=True):
            scores[i, persona] = (r - mean) / spread
    labels: dict[int, str] = {}
    taken: set[str] = set()
    for (i, persona), _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        if i not in labels and persona not in taken:
            labels[i] = persona
            taken.add(persona)
    used: Counter[str] = Counter(labels.values())
    for i in ids:
        if i not in labels:
            best = max(PERSONA_SIGNATURES, key=lambda p: (scores[i, p], p))
            used[best] += 1
            labels[i] = f"{best}_{used[best]}"
    return dict(sorted(labels.items()))


class Clusterer:
    """Online k-means over feature vectors, with warm start and stable ids.

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
        Seed of the k-means++ seeding; the same examples give the same model.
    size_window
        Recent examples over which :attr:`sizes` counts cluster membership.

    Examples
    --------
    >>> model = Clusterer(n_clusters=2, warmup=4, seed=1)
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
    ) -> None:
        self.n_clusters = n_clusters
        self.warmup = max(warmup, n_clusters)
        self.seed = seed
        self.kmeans = cluster.KMeans(n_clusters=n_clusters, halflife=halflife, seed=seed)
        self.buffer: list[FeatureVector] = []
        self.ready = False
        self.recent: deque[int] = deque(maxlen=size_window)
        self.latest: deque[dict[str, float]] = deque(maxlen=_LATEST)
        self.check_every = max(size_window // 4, 1)
        self.revived = 0
        self.examples = 0

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn from one example (never mutates ``x``)."""
        self.examples += 1
        if not self.ready:
            self.buffer.append(dict(x))
            if len(self.buffer) >= self.warmup:
                self._seed_centres()
            return
        self.recent.append(self._nearest(x))
        self.latest.append(dict(x))
        self.kmeans.learn_one(dict(x))
        if self.examples % self.check_every == 0:
            self._revive_starved()

    def predict_one(self, x: Mapping[str, float]) -> int | None:
        """The closest cluster's id, or ``None`` before the centres are seeded."""
        return self._nearest(x) if self.ready else None

    def _nearest(self, x: Mapping[str, float]) -> int:
        return min(range(self.n_clusters), key=lambda i: (_distance(x, self.centroid(i)), i))

    def centroid(self, i: int) -> dict[str, float]:
        """Cluster ``i``'s centre as a plain dict (read without touching the model)."""
        return dict(self.kmeans.centers[i])

    def centroids(self) -> dict[int, dict[str, float]]:
        """Every centre, by cluster id; empty before seeding."""
        return {i: self.centroid(i) for i in range(self.n_clusters)} if self.ready else {}

    @property
    def sizes(self) -> dict[int, int]:
        """Examples per cluster among the last ``size_window`` learned."""
        counts = Counter(self.recent)
        return {i: counts.get(i, 0) for i in range(self.n_clusters)} if self.ready else {}

    def _revive_starved(self) -> None:
        """Move a centre that wins (almost) nothing to where it is needed most.

        Online k-means starves a centre seeded where the data no longer is
        (early in a history every customer is new, say): it never wins again.
        Such a centre moves to the recent example farthest from every
        centre — its id stays; its persona label follows its new centroid.
        """
        if len(self.recent) < (self.recent.maxlen or 0):
            return
        floor = len(self.recent) * _STARVED_SHARE
        sizes = self.sizes
        for i in sorted(sizes, key=lambda c: (sizes[c], c)):
            if sizes[i] > floor or not self.latest:
                break
            centres = self.centroids()
            far = max(self.latest, key=lambda x: min(_distance(x, c) for c in centres.values()))
            target = self.kmeans.centers[i]
            target.clear()
            target.update(far)
            self.revived += 1
            # Count it as alive until it has had a window to win examples.
            self.recent.extend([i] * int(floor + 1))

    def _seed_centres(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 - model initialisation, not security
        centres = _kmeans_plus_plus(self.buffer, self.n_clusters, rng)
        for _ in range(10):
            centres = _lloyd_step(self.buffer, centres)
        for i, centre in enumerate(centres):
            target = self.kmeans.centers[i]
            target.clear()
            target.update(centre)
        self.ready = True
        for x in self.buffer:
            self.recent.append(self._nearest(x))
        self.buffer = []


def _distance(x: Mapping[str, float], centre: Mapping[str, float]) -> float:
    keys = x.keys() | centre.keys()
    return sum((x.get(k, 0.0) - centre.get(k, 0.0)) ** 2 for k in keys)


def _mean(points: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for p in points for k in p})
    return {k: sum(p.get(k, 0.0) for p in points) / len(points) for k in keys}


def _kmeans_plus_plus(
    points: Sequence[Mapping[str, float]], k: int, rng: random.Random
) -> list[dict[str, float]]:
    centres = [dict(points[rng.randrange(len(points))])]
    while len(centres) < k:
        weights = [min(_distance(p, c) for c in centres) for p in points]
        total = sum(weights)
        if total == 0:
            centres.append(dict(points[rng.randrange(len(points))]))
            continue
        centres.append(dict(rng.choices(points, weights=weights)[0]))
    return centres


def _lloyd_step(
    points: Sequence[Mapping[str, float]], centres: list[dict[str, float]]
) -> list[dict[str, float]]:
    groups: list[list[Mapping[str, float]]] = [[] for _ in centres]
    for p in points:
        groups[min(range(len(centres)), key=lambda i: (_distance(p, centres[i]), i))].append(p)
    return [_mean(g) if g else c for g, c in zip(groups, centres, strict=True)]
