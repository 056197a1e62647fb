"""The churn model's inputs: the purchase process's own estimate, and time that never saturates.

The clustering features (:mod:`models.features`) are scaled into [0, 1] and
capped: days since the last order stop at 90, tenure at 30. For churn that
makes everyone silent for a quarter look alike, and per-month rates shrink
as tenure grows, so the features drift between the customers a model learns
from and the ones it scores. The churn model reads these instead:

=====================  =========================================================
feature                meaning
=====================  =========================================================
bgnbd_churn_logit      log-odds of no order in the next H days under the
                       population's BG/NBD fit (:func:`models.clv.p_no_purchase`),
                       clipped to ±12; 0 before a first order
has_ordered            1 after a first order
recency_log            ln(1 + days since the last order); since first seen
                       before any order
silence_log            ln(1 + days since the last event of any kind)
tenure_log             ln(1 + days since the first order, or first seen)
orders_log             ln(1 + orders)
=====================  =========================================================

followed by the clustering features that describe behaviour rather than
time or rates over tenure (:data:`BEHAVIOUR`). Nothing is capped, so a
customer silent for two years is told from one silent for four months.

>>> from models.clv import new_bgnbd
>>> from models.profile import ProfileConfig, apply_event, event
>>> p, _ = apply_event(None, event("purchases", "order", 0, "e1", amount=50.0), ProfileConfig())
>>> x = churn_features(p, ProfileConfig(), 400 * 86_400_000, new_bgnbd(), 90.0)
>>> x["recency_log"], x["has_ordered"], x["bgnbd_churn_logit"] > 0
(5.994, 1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from models.clv import p_no_purchase
from models.features import FEATURES, FeatureVector, feature_vector
from models.profile import DAY_MS, Profile, ProfileConfig
from models.profile_summary import bgnbd_summary

# Clustering features kept for churn: behaviour, not time or rates over tenure.
TIME_AND_TENURE: Final = (
    "tenure",
    "days_since_seen",
    "days_since_order",
    "has_ordered",
    "orders_per_month",
)
BEHAVIOUR: Final = tuple(name for name in FEATURES if name not in TIME_AND_TENURE)
CHURN_FEATURES: Final = (
    "bgnbd_churn_logit",
    "has_ordered",
    "recency_log",
    "silence_log",
    "tenure_log",
    "orders_log",
    *BEHAVIOUR,
)
LOGIT_CLIP: Final = 12.0


def bgnbd_inputs(profile: Profile, as_of_ms: int) -> tuple[int, float, float] | None:
    """BG/NBD's ``(x, t_x, T)`` in days as of ``as_of_ms``; None before an order."""
    if profile["first_order_ms"] is None or profile["last_order_ms"] is None:
        return None
    return bgnbd_summary(profile, as_of_ms)


def bgnbd_churn(
    profile: Profile, as_of_ms: int, bgnbd: Mapping[str, Any], horizon_days: float
) -> float | None:
    """P(no order in the next ``horizon_days``) under the BG/NBD fit; None before an order."""
    inputs = bgnbd_inputs(profile, as_of_ms)
    return None if inputs is None else p_no_purchase(bgnbd, *inputs, horizon_days)


def churn_logit(p: float) -> float:
    """Log-odds of a probability, clipped to ±:data:`LOGIT_CLIP`, rounded to 4 digits."""
    p = min(max(p, 1e-9), 1 - 1e-9)
    return round(max(min(math.log(p / (1 - p)), LOGIT_CLIP), -LOGIT_CLIP), 4)


def churn_features(
    profile: Profile,
    config: ProfileConfig,
    as_of_ms: int,
    bgnbd: Mapping[str, Any],
    horizon_days: float,
    clustering: FeatureVector | None = None,
) -> FeatureVector:
    """The churn model's inputs as of ``as_of_ms``, rounded to 4 digits.

    ``clustering`` is the customer's :func:`models.features.feature_vector`
    at the same moment, when the caller has it already.
    """
    behaviour = clustering if clustering is not None else feature_vector(profile, config, as_of_ms)
    last_seen = profile["last_seen_ms"]
    as_of = as_of_ms if last_seen is None else max(as_of_ms, last_seen)
    seen = as_of if last_seen is None else last_seen
    first_seen = as_of if profile["first_seen_ms"] is None else profile["first_seen_ms"]
    last_order = profile["last_order_ms"]
    ordered = first_seen if last_order is None else last_order
    start = first_seen if profile["first_order_ms"] is None else profile["first_order_ms"]
    p = bgnbd_churn(profile, as_of, bgnbd, horizon_days)
    return {
        "bgnbd_churn_logit": 0.0 if p is None else churn_logit(p),
        "has_ordered": 1.0 if last_order is not None else 0.0,
        "recency_log": round(math.log1p((as_of - ordered) / DAY_MS), 4),
        "silence_log": round(math.log1p((as_of - seen) / DAY_MS), 4),
        "tenure_log": round(math.log1p((as_of - start) / DAY_MS), 4),
        "orders_log": round(math.log1p(profile["totals"].get("orders", 0)), 4),
        **{name: behaviour[name] for name in BEHAVIOUR},
    }


def model_inputs(
    profile: Profile,
    config: ProfileConfig,
    as_of_ms: int,
    bgnbd: Mapping[str, Any],
    horizon_days: float,
) -> FeatureVector:
    """Both models' inputs: the clustering features, then the churn features."""
    clustering = feature_vector(profile, config, as_of_ms)
    churn = churn_features(profile, config, as_of_ms, bgnbd, horizon_days, clustering)
    return {**clustering, **churn}
