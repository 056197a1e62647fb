"""Sentiment of free-text feedback, with VADER (a lexicon-based analyser).

VADER needs no model download: its lexicon ships inside the package. Scores
are VADER's compound score in [-1, 1]; ≤ -0.5 counts as strongly negative.

>>> score = compound("Frustrating website and unhelpful staff, I am unhappy.")
>>> score < -0.5
True
"""

from __future__ import annotations

from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


@lru_cache(maxsize=1)
def _analyser() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    """VADER compound sentiment of ``text`` in [-1, 1] (first 1,000 characters)."""
    return float(_analyser().polarity_scores(text[:1000])["compound"])
