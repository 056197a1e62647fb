"""River contract tests for every model pipeline (after river/checks/common.py).

For the churn model, the clusterer and the whole bundle: a pickle
round-trip gives identical predictions; a fixed seed is deterministic;
``learn_one`` never mutates its input; features that appear or disappear
are tolerated.
"""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from models.churn import ChurnModel
from models.clustering import Clusterer
from models.features import FEATURES
from models.training import (
    ModelBundle,
    ModelConfig,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
)


def vectors(seed: int, n: int = 400) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{f: round(rng.random(), 4) for f in FEATURES} for _ in range(n)]


def label(x: dict[str, float]) -> int:
    return int(x["days_since_seen"] + 0.3 * x["discount_share"] > 0.6)


def train_churn(xs: list[dict[str, float]]) -> ChurnModel:
    model = ChurnModel(horizon_days=30, min_labels=5)
    for x in xs:
        model.learn_one(x, label(x))
    return model


def train_clusterer(xs: list[dict[str, float]], seed: int = 3) -> Clusterer:
    model = Clusterer(n_clusters=4, warmup=50, seed=seed, size_window=100)
    for x in xs:
        model.learn_one(x)
    return model


def train_bundle(xs: list[dict[str, float]]) -> ModelBundle:
    bundle = ModelBundle(ModelConfig(warmup_examples=50, min_labels=5, clusters=4))
    for i, x in enumerate(xs):
        bundle.learn({"example_id": f"c{i}", "kind": "cluster", "x": x})
        bundle.learn(
            {"example_id": f"h{i}", "kind": "churn", "x": x, "y": label(x), "p": 0.5,
             "source": "prior"}
        )  # fmt: skip
    return bundle


PREDICTORS: dict[str, tuple[Callable[[list[dict[str, float]]], Any], Callable[[Any, Any], Any]]] = {
    "churn": (train_churn, lambda m, x: m.predict_one(x)),
    "clusterer": (train_clusterer, lambda m, x: m.predict_one(x)),
    "bundle": (train_bundle, lambda m, x: m.score(x)),
}


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_pickle_round_trip_gives_identical_predictions(name: str) -> None:
    train, predict = PREDICTORS[name]
    model = train(vectors(1))
    again = pickle.loads(pickle.dumps(model))  # noqa: S301 - our own bytes
    for x in vectors(2, 50):
        assert predict(again, x) == predict(model, x)
    # And both keep learning the same way.
    more = vectors(3, 50)
    if name == "bundle":
        for i, x in enumerate(more):
            for m in (model, again):
                m.learn({"example_id": f"m{i}", "kind": "cluster", "x": x})
    for x in vectors(4, 20):
        assert predict(again, x) == predict(model, x)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_fixed_seed_is_deterministic(name: str) -> None:
    train, predict = PREDICTORS[name]
    a, b = train(vectors(5)), train(vectors(5))
    assert [predict(a, x) for x in vectors(6, 50)] == [predict(b, x) for x in vectors(6, 50)]


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_learning_and_predicting_never_mutate_the_input(name: str) -> None:
    train, predict = PREDICTORS[name]
    xs = vectors(7)
    before = copy.deepcopy(xs)
    model = train(xs)
    assert xs == before
    x = vectors(8, 1)[0]
    kept = dict(x)
    predict(model, x)
    assert x == kept


def test_features_that_appear_or_disappear_are_tolerated() -> None:
    xs = vectors(9)
    model = train_bundle(xs)
    partial = {k: v for k, v in xs[0].items() if k not in ("aov", "tenure")}
    extra = {**xs[0], "brand_new_feature": 0.7}
    for x in (partial, extra, {}):
        scores = model.score(x)
        assert 0.0 <= scores["churn_probability"] <= 1.0
        assert scores["cluster_id"] in range(4)
    # Predicting with an unknown feature must not grow the centroids
    # (River's KMeans.predict_one would insert a random coordinate).
    assert "brand_new_feature" not in model.clusters.centroid(0)
    model.learn(
        {"example_id": "x", "kind": "churn", "x": extra, "y": 1, "p": 0.5, "source": "model"}
    )
    model.learn({"example_id": "y", "kind": "cluster", "x": partial})


def test_cluster_ids_are_stable_while_the_model_learns() -> None:
    model = train_clusterer(vectors(10))
    probe = vectors(11, 30)
    before = [model.predict_one(x) for x in probe]
    # A little more data of the same kind moves centres, never permutes ids.
    for x in vectors(12, 20):
        model.learn_one(x)
    after = [model.predict_one(x) for x in probe]
    agree = sum(a == b for a, b in zip(before, after, strict=True))
    assert agree >= 0.8 * len(probe)
    assert set(model.centroids()) == set(range(4))


def test_snapshot_with_a_wrong_key_or_tampered_bytes_is_refused_before_unpickling() -> None:
    data = encode_snapshot(train_bundle(vectors(13, 60)), b"key")
    with pytest.raises(SnapshotError, match="HMAC"):
        decode_snapshot(data, b"other key")
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(SnapshotError, match="HMAC"):
        decode_snapshot(tampered, b"key")
    with pytest.raises(SnapshotError, match="not a segstream"):
        decode_snapshot(b"\x80\x04K\x01.", b"key")  # a bare pickle
    assert decode_snapshot(data, b"key").examples == 120


def test_duplicate_examples_and_already_learned_offsets_are_skipped() -> None:
    bundle = ModelBundle(ModelConfig())
    example = {"example_id": "a", "kind": "cluster", "x": vectors(14, 1)[0]}
    assert bundle.learn(example, offset=0)
    assert not bundle.learn(example, offset=1)  # same id, sent twice
    assert not bundle.learn({**example, "example_id": "b"}, offset=0)  # offset already learned
    assert bundle.examples == 1


def blob(rng: random.Random, a: float, b: float) -> dict[str, float]:
    return {"a": a + rng.gauss(0, 0.03), "b": b + rng.gauss(0, 0.03)}


def test_a_group_that_appears_later_gets_a_centre_and_other_ids_stay() -> None:
    rng = random.Random(0)
    model = Clusterer(n_clusters=3, warmup=60, seed=1, swap_every=100, features=("a", "b"))
    # Two groups for three centres: one group is split between two centres.
    for i in range(600):
        model.learn_one(blob(rng, float(i % 2), 0.0))
    left = {model.predict_one(blob(rng, 0.0, 0.0)) for _ in range(50)}
    right = {model.predict_one(blob(rng, 1.0, 0.0)) for _ in range(50)}
    # A third group arrives; online updates alone would leave it to the
    # nearest centre, a swap gives it one of the split group's centres.
    for i in range(900):
        model.learn_one(blob(rng, 0.5, 1.0) if i % 3 == 0 else blob(rng, float(i % 2), 0.0))
    after = [model.predict_one(blob(rng, a, b)) for a, b in ((0, 0), (1, 0), (0.5, 1))]
    assert model.swaps >= 1
    assert len(set(after)) == 3
    # Ids are never permuted: each old group keeps one of the ids it had.
    assert after[0] in left
    assert after[1] in right


def test_weights_shape_the_distance_and_centroids_stay_in_feature_units() -> None:
    x, y = {"a": 0.0, "b": 0.0}, {"a": 0.3, "b": 0.4}
    flat = Clusterer(n_clusters=2, warmup=2, seed=1, features=("a", "b"), weights={})
    heavy_a = Clusterer(n_clusters=2, warmup=2, seed=1, features=("a", "b"), weights={"a": 9.0})
    for model in (flat, heavy_a):
        model.learn_one(x)
        model.learn_one(y)
        assert sorted(c["b"] for c in model.centroids().values()) == pytest.approx([0.0, 0.4])
    # (0.2, 0.0) is nearer y in a, nearer x in plain distance, but nearer y
    # once a difference in "a" counts nine times.
    probe = {"a": 0.2, "b": 0.0}
    assert flat.predict_one(probe) == flat.predict_one(x)
    assert heavy_a.predict_one(probe) == heavy_a.predict_one(y)
