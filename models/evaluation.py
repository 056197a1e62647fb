"""Exact figures for scored predictions: ROC AUC, log loss, Brier score.

The AUC is the Mann–Whitney statistic — the probability that a random
positive is ranked above a random negative, ties counting half — computed
exactly from ranks, never from a few thresholds.

>>> exact_auc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5])
0.875
>>> brier([1, 0], [0.75, 0.25])
0.0625
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def exact_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC of ``scores`` for ``labels`` (1 positive); None without both classes."""
    if len(labels) != len(scores):
        raise ValueError("labels and scores differ in length")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid_rank = (i + j) / 2 + 1  # 1-based average rank of the tied run
        rank_sum += mid_rank * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def brier(labels: Sequence[int], probabilities: Sequence[float]) -> float | None:
    """Mean squared error of the probabilities; None for no labels."""
    if not labels:
        return None
    return sum((p - y) ** 2 for y, p in zip(labels, probabilities, strict=True)) / len(labels)


def log_loss(labels: Sequence[int], probabilities: Sequence[float]) -> float | None:
    """Mean negative log-likelihood, probabilities clipped to [1e-6, 1 − 1e-6]."""
    if not labels:
        return None
    total = 0.0
    for y, p in zip(labels, probabilities, strict=True):
        q = min(max(p, 1e-6), 1 - 1e-6)
        total -= math.log(q if y else 1 - q)
    return total / len(labels)
