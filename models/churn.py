"""Churn: the probability that a customer makes no purchase in the next H days.

Learned online from delayed labels (:mod:`models.moments` produces them): a
customer's features are snapshotted when they are scored, and the label
resolves later — 0 at a purchase within H days, 1 when event time passes H
days without one.

The model is a River pipeline, ``StandardScaler | LogisticRegression``.
Class imbalance is handled by weighting: each class carries half the total
weight (from running class counts), so the rarer class is not drowned out;
the learned odds are then shifted back by the observed class ratio, so the
probabilities stay calibrated to the real churn rate (prior correction).

Until ``min_labels`` examples of each class have resolved, the score is a
prior: a customer buying every ``g`` days on average (from their own
history) would buy within H with probability ``1 − exp(−H/g)`` if still
active, and the chance they are still active falls with the time since
their last order relative to ``g``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from river import compose, linear_model, optim, preprocessing

Explanation = list[dict[str, Any]]


def churn_pipeline(learning_rate: float = 0.05, l2: float = 1e-4) -> compose.Pipeline:
    """A fresh churn pipeline: standardise, then logistic regression."""
    return compose.Pipeline(
        ("scale", preprocessing.StandardScaler()),
        (
            "logit",
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2),
        ),
    )


def prior_probability(x: Mapping[str, float], horizon_days: float) -> float:
    """The churn prior from the customer's own purchase cadence.

    Uses the unscaled inputs the feature vector was built from
    (``days_since_order`` × 90 days, ``orders_per_month`` undone).

    >>> round(prior_probability({"days_since_order": 0.0, "orders_per_month": 0.5}, 90), 3)
    0.002
    >>> round(prior_probability({"days_since_order": 1.0, "orders_per_month": 0.0}, 90), 3)
    0.617
    """
    recency_days = x.get("days_since_order", 1.0) * 90
    orders_per_month = math.expm1(x.get("orders_per_month", 0.0) * math.log1p(8))
    gap_days = 30.0 / orders_per_month if orders_per_month > 0 else 90.0
    gap_days = min(max(gap_days, 3.0), 365.0)
    buys_if_active = 1 - math.exp(-horizon_days / gap_days)
    still_active = math.exp(-recency_days / (2 * gap_days))
    return 1 - buys_if_active * still_active


class ChurnModel:
    """Online churn classifier with class balancing and a prior until trained.

    Parameters
    ----------
    horizon_days
        H: churn means no purchase in the next H days.
    min_labels
        Resolved labels needed of *each* class before the model replaces the prior.

    Examples
    --------
    >>> m = ChurnModel(horizon_days=30, min_labels=2)
    >>> for i in range(40):
    ...     m.learn_one({"quiet": 1.0, "bias": 1.0}, 1)
    ...     m.learn_one({"quiet": 0.0, "bias": 1.0}, 0)
    >>> p_quiet, source, _ = m.predict_one({"quiet": 1.0, "bias": 1.0})
    >>> p_busy, _, _ = m.predict_one({"quiet": 0.0, "bias": 1.0})
    >>> source, p_quiet > 0.5 > p_busy
    ('model', True)
    """

    def __init__(self, horizon_days: float = 90.0, min_labels: int = 30) -> None:
        self.horizon_days = horizon_days
        self.min_labels = min_labels
        self.pipeline = churn_pipeline()
        self.counts = [0, 0]

    @property
    def trained(self) -> bool:
        """Whether enough labels of both classes have resolved to trust the model."""
        return min(self.counts) >= self.min_labels

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        """Learn one resolved example (``y`` = 1: no purchase within H)."""
        self.counts[y] += 1
        total = self.counts[0] + self.counts[1]
        # Each class carries half the weight: w_c = total / (2 n_c).
        weight = min(total / (2 * self.counts[y]), 20.0)
        self.pipeline.learn_one(dict(x), bool(y), w=weight)

    def predict_one(self, x: Mapping[str, float]) -> tuple[float, str, Explanation]:
        """``(probability, source, explanation)``; source is ``model`` or ``prior``.

        The explanation lists the features pushing the score up most: for
        the model, weight × standardised value; for the prior, its inputs.
        """
        if not self.trained:
            p = prior_probability(x, self.horizon_days)
            reasons = [
                {"feature": "days_since_order", "value": x.get("days_since_order")},
                {"feature": "orders_per_month", "value": x.get("orders_per_month")},
            ]
            return round(p, 4), "prior", reasons
        scaled = self.pipeline["scale"].transform_one(dict(x))
        logit = self.pipeline["logit"]
        contributions = {f: logit.weights.get(f, 0.0) * v for f, v in scaled.items()}
        z = sum(contributions.values()) + logit.intercept
        # Balanced training learns odds as if both classes were equally
        # common; multiply by the real class ratio to recover the real odds.
        z += math.log(self.counts[1] / self.counts[0])
        p = 1 / (1 + math.exp(-max(min(z, 50.0), -50.0)))
        top = sorted(
            (item for item in contributions.items() if item[1] > 0), key=lambda kv: -kv[1]
        )[:3]
        reasons = [{"feature": f, "value": x.get(f), "contribution": round(c, 4)} for f, c in top]
        return round(p, 4), "model", reasons
