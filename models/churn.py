"""Churn: the probability that a customer makes no purchase in the next H days.

Learned online from delayed labels (:mod:`models.moments` produces them): a
customer's features are snapshotted when they are scored, and the label
resolves later — 0 at a purchase within H days, 1 when event time passes H
days without one.

The model starts from the purchase process and learns what the rest adds.
Its base is a log-odds ``o``: for a customer who has ordered, the BG/NBD
fit's own probability of no order within H
(:data:`models.churn_features.CHURN_FEATURES`' first input); for one who has
not, :func:`prior_probability`. On top of it, a logistic regression on the
standardised churn features (``river.preprocessing.StandardScaler``),
``p = σ(o + b + Σ wᵢ·zᵢ)``, learned by SGD on the log loss with an L2
penalty, starting from zero. So an untrained model is exactly the BG/NBD
estimate — calibrated when the fit is — and learning moves away from it
only as far as resolved labels show it is wrong. There is no class
weighting: the base already carries the churn rate, and unweighted log loss
keeps the probabilities calibrated.

Every resolved label is first predicted by both, the base alone and the
corrected model, before it is learned (progressive validation). The
correction is served (source ``model``) only once ``min_labels`` of each
class have resolved and, on the last ``window`` labels, its log loss is
below the base's by ``CORRECTION_MARGIN``; otherwise the score is the base
(source ``prior``). On purchase histories alone the base usually wins: the
BG/NBD process is what generates them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from river import preprocessing

from models.churn_features import BEHAVIOUR
from models.evaluation import exact_auc, log_loss

Explanation = list[dict[str, Any]]
# What the correction learns from: behaviour, and how much more recently the
# customer was seen than they ordered. The purchase history itself (orders,
# recency, tenure) is the base's: learned again on top of it, it only fits
# the online BG/NBD fit's passing errors, which move as the fit learns.
_LEARNED = (*BEHAVIOUR, "seen_since_order")


# The correction is served only while it beats the calibrated base by this
# share of log loss and by this much exact AUC.
CORRECTION_MARGIN = 0.01
AUC_MARGIN = 0.005
CHECK_EVERY = 50  # labels between two checks of which of the two is served


def _log_loss(y: int, p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return -math.log(p if y else 1 - p)


def _sigmoid(z: float) -> float:
    z = max(min(z, 50.0), -50.0)
    return 1 / (1 + math.exp(-z))


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


def base_logit(x: Mapping[str, float], horizon_days: float) -> float:
    """The log-odds the model starts from: the BG/NBD estimate, or the prior before an order."""
    if x.get("has_ordered") and "bgnbd_churn_logit" in x:
        return float(x["bgnbd_churn_logit"])
    p = min(max(prior_probability(x, horizon_days), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class ChurnModel:
    """Online churn model: the purchase process's log-odds, corrected by what labels teach.

    Parameters
    ----------
    horizon_days
        H: churn means no purchase in the next H days.
    min_labels
        Resolved labels needed of *each* class before the learned correction is used.
    learning_rate, l2
        SGD step and L2 penalty of the correction.

    Examples
    --------
    >>> m = ChurnModel(horizon_days=30, min_labels=2, window=100)
    >>> quiet = {"quiet": 1.0, "has_ordered": 1.0, "bgnbd_churn_logit": 0.0}
    >>> busy = {"quiet": 0.0, "has_ordered": 1.0, "bgnbd_churn_logit": 0.0}
    >>> m.predict_one(quiet)[:2]  # untrained: the BG/NBD estimate itself
    (0.5, 'prior')
    >>> for i in range(200):
    ...     m.learn_one(quiet, 1)
    ...     m.learn_one(busy, 0)
    >>> p_quiet, source, _ = m.predict_one(quiet)
    >>> p_busy, _, _ = m.predict_one(busy)
    >>> source, p_quiet > 0.5 > p_busy
    ('model', True)
    """

    def __init__(
        self,
        horizon_days: float = 90.0,
        min_labels: int = 30,
        learning_rate: float = 0.01,
        l2: float = 1e-3,
        window: int = 1000,
    ) -> None:
        self.horizon_days = horizon_days
        self.min_labels = min_labels
        self.learning_rate = learning_rate
        self.l2 = l2
        # Calibration of the base: σ(a + c·o), learned from the labels.
        self.calibration = [0.0, 1.0]
        self.scaler: Any = preprocessing.StandardScaler()  # River: untyped
        self.weights: dict[str, float] = {}
        self.intercept = 0.0
        self.counts = [0, 0]
        self.serve_correction = False
        # (label, calibrated base, corrected) on the last ``window`` labels,
        # each predicted before learning from the label.
        self.recent: deque[tuple[int, float, float]] = deque(maxlen=window)

    @property
    def calibrated(self) -> bool:
        """Whether enough labels of both classes resolved to calibrate the base."""
        return min(self.counts) >= self.min_labels

    @property
    def trained(self) -> bool:
        """Whether the learned correction is served: the base is calibrated, and on
        the latest labels the correction predicted better than the calibrated base,
        in log loss and in ranking (exact AUC) alike (checked every
        :data:`CHECK_EVERY` labels)."""
        return self.calibrated and getattr(self, "serve_correction", False)

    def _check_correction(self) -> bool:
        if len(self.recent) < (self.recent.maxlen or 0) // 2:
            return False
        figures = self.validation()
        loss_base, loss_corrected = figures["log_loss_base"], figures["log_loss_corrected"]
        auc_base, auc_corrected = figures["auc_base"], figures["auc_corrected"]
        if loss_base is None or loss_corrected is None or auc_base is None or auc_corrected is None:
            return False
        return (
            loss_corrected < loss_base * (1 - CORRECTION_MARGIN)
            and auc_corrected >= auc_base + AUC_MARGIN
        )

    def validation(self) -> dict[str, float | int | None]:
        """The calibrated base and the corrected model on the latest labels:
        mean log loss and exact ROC AUC of each."""
        labels = [y for y, _, _ in self.recent]
        base = [p for _, p, _ in self.recent]
        corrected = [p for _, _, p in self.recent]

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "labels": len(labels),
            "log_loss_base": rounded(log_loss(labels, base)),
            "log_loss_corrected": rounded(log_loss(labels, corrected)),
            "auc_base": rounded(exact_auc(labels, base)),
            "auc_corrected": rounded(exact_auc(labels, corrected)),
        }

    def _inputs(self, x: Mapping[str, float]) -> dict[str, float]:
        inputs = {name: float(x[name]) for name in _LEARNED if name in x}
        if "recency_log" in x and "silence_log" in x:
            inputs["seen_since_order"] = float(x["recency_log"]) - float(x["silence_log"])
        return inputs or {n: float(v) for n, v in x.items() if n != "has_ordered"}

    def _calibrated_logit(self, base: float) -> float:
        a, c = self.calibration
        return a + c * base

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        """Learn one resolved example (``y`` = 1: no purchase within H)."""
        self.counts[y] += 1
        if sum(self.counts) % CHECK_EVERY == 0:
            self.serve_correction = self._check_correction()
        inputs = self._inputs(x)
        base = self._calibrated_logit(base_logit(x, self.horizon_days))
        if self.scaler.counts:
            # Progressive validation: both predictions before this label is learned.
            before = self.scaler.transform_one(inputs)
            z = base + self.intercept + sum(self.weights.get(f, 0.0) * v for f, v in before.items())
            self.recent.append((y, _sigmoid(base), _sigmoid(z)))
        step = self.learning_rate
        # The calibration: SGD on the log loss of σ(a + c·o).
        raw = base_logit(x, self.horizon_days)
        error = _sigmoid(base) - y
        self.calibration[0] -= step * error
        self.calibration[1] -= step * error * raw / (1 + abs(raw))
        # The correction, on top of the calibrated base.
        self.scaler.learn_one(inputs)
        scaled = self.scaler.transform_one(inputs)
        z = base + self.intercept + sum(self.weights.get(f, 0.0) * v for f, v in scaled.items())
        error = _sigmoid(z) - y
        self.intercept -= step * error
        for f, v in scaled.items():
            w = self.weights.get(f, 0.0)
            self.weights[f] = w - step * (error * v + self.l2 * w)

    def predict_one(self, x: Mapping[str, float]) -> tuple[float, str, Explanation]:
        """``(probability, source, explanation)``; source is ``model`` or ``prior``.

        The explanation lists what pushes the score up most: the base
        log-odds (named by the input it comes from), then the learned
        weight × standardised value of each feature.
        """
        base = base_logit(x, self.horizon_days)
        base_name = "bgnbd_churn_logit" if x.get("has_ordered") else "days_since_order"
        if self.calibrated:
            base = self._calibrated_logit(base)
        if not self.trained:
            reasons = [
                {"feature": base_name, "value": x.get(base_name), "contribution": round(base, 4)}
            ]
            reasons += [
                {"feature": name, "value": x.get(name)}
                for name in ("recency_log", "orders_log")
                if name in x
            ]
            source = "bgnbd" if self.calibrated else "prior"
            return round(_sigmoid(base), 4), source, reasons
        scaled = self.scaler.transform_one(self._inputs(x))
        contributions = {f: self.weights.get(f, 0.0) * v for f, v in scaled.items()}
        z = base + self.intercept + sum(contributions.values())
        contributions[base_name] = base
        top = sorted(
            (item for item in contributions.items() if item[1] > 0), key=lambda kv: -kv[1]
        )[:3]
        reasons = [{"feature": f, "value": x.get(f), "contribution": round(c, 4)} for f, c in top]
        return round(_sigmoid(z), 4), "model", reasons
