"""The user's computed traits and audiences on a customer's profile.

:mod:`models.definitions` reads the definitions file and evaluates traits and
audiences; this module keeps them on a profile:

* :func:`fold_traits` folds each applied event into the states of the traits
  it matches, kept in ``profile["traits"]`` under each trait's fingerprint
  (a hash of its definition), so an unchanged trait keeps its state when the
  file changes and a changed one starts afresh;
* :func:`audience_context` gathers what an audience may read at a decision:
  trait values, the built-in :data:`METRICS`, the model :data:`SCORES` and
  the built-in segments;
* :func:`audience_dimension` names the segment dimension an audience is
  published as (``audience.<name>``, values ``in`` and ``out``).

The segment decisions (:mod:`models.segments`) decide each audience as a
dimension with the built-in ones, at the same moments and with the same
dwell rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from models.definitions import Context, Definitions, TraitState, trait_values
from models.profile import DAY_MS, Profile, net_revenue

# Built-in metrics an audience reads as ``metric.<name>``.
METRICS: Final = (
    "orders",  # orders ever
    "revenue",  # net revenue ever, in the base currency
    "aov",  # net revenue per order (null before an order)
    "sessions_30d",  # sessions in the last 30 days
    "orders_90d",  # orders in the last 90 days
    "days_since_last_order",  # null before an order
    "days_since_last_seen",
    "last_order_at",  # event time, epoch ms (for days_since)
    "last_seen_at",
    "first_seen_at",
    "open_tickets",
    "nps_last",  # latest NPS answer, 0..10
    "clv",  # simple CLV, base currency (null before an order)
)
# Model scores an audience reads as ``score.<name>``.
SCORES: Final = ("churn_probability", "churn_source", "cluster_id", "persona")
AUDIENCE_PREFIX: Final = "audience."


def audience_dimension(name: str) -> str:
    """The segment dimension audience ``name`` is published as.

    >>> audience_dimension("vip_at_risk")
    'audience.vip_at_risk'
    """
    return AUDIENCE_PREFIX + name


# The metrics that move when a session or order leaves its window.
_WINDOWED: Final = frozenset({"metric.sessions_30d", "metric.orders_90d"})


_READS: dict[tuple[str, str], bool] = {}  # by the definitions' digest and what


def reads_windows(definitions: Definitions) -> bool:
    """Whether an audience reads a windowed count (decided again at its window edges)."""
    key = (definitions.digest, "windows")
    if key not in _READS:
        names = (audience.names() for audience in definitions.audiences.values())
        _READS[key] = any(read & _WINDOWED for read in names)
    return _READS[key]


def reads_scores(definitions: Definitions) -> bool:
    """Whether an audience reads a model score (``score.<name>``)."""
    key = (definitions.digest, "scores")
    if key not in _READS:
        names = (audience.names() for audience in definitions.audiences.values())
        _READS[key] = any(n.startswith("score.") for read in names for n in read)
    return _READS[key]


def fold_traits(profile: Profile, event: Mapping[str, Any], definitions: Definitions) -> None:
    """Fold one applied event into the states of the traits it matches.

    A ``track`` event is matched by its name (a trait's ``type``). States of
    traits no longer defined are dropped.
    """
    states: dict[str, TraitState] = profile.setdefault("traits", {})
    current = {trait.fingerprint for trait in definitions.traits.values()}
    for stale in [key for key in states if key not in current]:
        del states[stale]
    if event.get("type") == "track":
        event = {**event, "type": event.get("name")}
    for trait in definitions.traits.values():
        if trait.matches(event):
            states[trait.fingerprint] = trait.fold(states.get(trait.fingerprint), event)


def trait_states(profile: Profile, definitions: Definitions) -> dict[str, TraitState]:
    """The customer's trait states by trait name (traits with no state left out)."""
    states = profile.get("traits", {})
    return {
        name: states[trait.fingerprint]
        for name, trait in definitions.traits.items()
        if trait.fingerprint in states
    }


def metrics(
    profile: Profile,
    now_ms: int,
    sessions_30d: int,
    orders_90d: int,
    clv: float | None,
) -> dict[str, Any]:
    """The built-in metrics an audience reads, as of ``now_ms``."""
    totals = profile["totals"]
    orders = int(totals.get("orders", 0))
    revenue = net_revenue(totals)
    last_order, last_seen = profile["last_order_ms"], profile["last_seen_ms"]
    return {
        "orders": orders,
        "revenue": round(revenue, 2),
        "aov": round(revenue / orders, 2) if orders else None,
        "sessions_30d": sessions_30d,
        "orders_90d": orders_90d,
        "days_since_last_order": (
            round((now_ms - last_order) / DAY_MS, 3) if last_order is not None else None
        ),
        "days_since_last_seen": (
            round((now_ms - last_seen) / DAY_MS, 3) if last_seen is not None else None
        ),
        "last_order_at": last_order,
        "last_seen_at": last_seen,
        "first_seen_at": profile["first_seen_ms"],
        "open_tickets": len(profile["open_tickets"]),
        "nps_last": profile["nps_last"],
        "clv": round(clv, 2) if clv is not None else None,
    }


def audience_context(
    profile: Profile,
    definitions: Definitions,
    now_ms: int,
    built_in: Mapping[str, Any],
    scores: Mapping[str, Any],
    segments: Mapping[str, str],
) -> Context:
    """What the customer's audiences read at ``now_ms``: traits, ``built_in``
    metrics (:func:`metrics`), model ``scores`` and built-in ``segments``."""
    return Context(
        now_ms=now_ms,
        traits=trait_values(definitions, trait_states(profile, definitions), now_ms),
        metrics=built_in,
        scores={name: scores.get(name) for name in SCORES},
        segments={dim: value for dim, value in segments.items() if "." not in dim},
    )
