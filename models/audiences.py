"""The user's computed traits and audiences on a customer's profile.

:mod:`models.definitions` reads the definitions file and evaluates traits and
audiences; this module keeps them on a profile:

* :func:`fold_traits` folds each applied event into the states of the traits
  it matches, kept in ``profile["traits"]`` under each trait's fingerprint
  (a hash of its definition), so an unchanged trait keeps its state when the
  file changes and a changed one starts afresh;
* :func:`sync_traits` brings a customer's states in line with a new version
  of the file: a trait the profile's own counters can answer for is worked
  out from them at once (:func:`seeded_state`); any other new trait counts
  from the customer's watermark on, and is *backfilling* until its window
  has passed (:func:`backfilling_traits`);
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
from typing import Any, Final, get_args

from models.definitions import Context, Definitions, Trait, TraitState, trait_values
from models.profile import DAY_MS, Profile, net_revenue
from schemas.records import ClickType, PurchaseType, SupportType

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

    A ``track`` event is matched by its name (a trait's ``type``). Call
    :func:`sync_traits` first, so that the states of traits no longer
    defined are gone and new traits are seeded or marked.
    """
    states: dict[str, TraitState] = profile.setdefault("traits", {})
    if event.get("type") == "track":
        event = {**event, "type": event.get("name")}
    for trait in definitions.traits.values():
        if trait.matches(event):
            states[trait.fingerprint] = trait.fold(states.get(trait.fingerprint), event)


# The built-in event types whose counts the profile keeps, per topic (its
# "<topic>.<type>" counters). A custom event is counted as "clickstream.track"
# whatever its name, so a trait over one cannot be worked out from them.
_COUNTED_TYPES: Final = {
    "clickstream": frozenset(get_args(ClickType)) - {"track"},
    "purchases": frozenset(get_args(PurchaseType)),
    "support": frozenset(get_args(SupportType)),
}


def seeded_state(trait: Trait, profile: Profile, keep_days: int) -> TraitState | None:
    """The state ``trait`` would have had, worked out from the profile's own
    counters, or ``None`` when they cannot tell.

    Only an event count without ``where`` can be: over the lifetime from the
    ``lifetime`` counters, in a window of at most ``keep_days`` (how long the
    profile keeps its day buckets) from the buckets. Those counters count
    every applied event as :func:`fold_traits` folds them, so the state is
    the one the trait would hold had it been defined from the customer's
    first event.

    >>> from models.profile import new_profile
    >>> profile = new_profile()
    >>> profile["lifetime"] = {"purchases.order": 3, "purchases.refund": 1}
    >>> profile["buckets"] = {"10": {"purchases.order": 2}, "12": {"purchases.refund": 1}}
    >>> seeded_state(Trait("n", "count", "purchases", "order"), profile, 90)
    {'a': [3, 0, 0, 0]}
    >>> seeded_state(Trait("n", "count", "purchases", window_days=7), profile, 90)
    {'d': {'10': [2, 0, 0, 0], '12': [1, 0, 0, 0]}}
    >>> print(seeded_state(Trait("n", "sum", "purchases", property="amount"), profile, 90))
    None
    """
    if trait.aggregate != "count" or trait.where:
        return None
    counted = _COUNTED_TYPES[trait.topic]
    if trait.type is not None and trait.type not in counted:
        return None
    if trait.window_days is not None and trait.window_days > keep_days:
        return None
    if trait.type is not None:
        names: tuple[str, ...] = (f"{trait.topic}.{trait.type}",)
    else:  # every event of the topic, custom ones included
        names = tuple(f"{trait.topic}.{type_}" for type_ in sorted(counted))
        names += ("clickstream.track",) if trait.topic == "clickstream" else ()
    if trait.window_days is None:
        total = sum(int(profile["lifetime"].get(name, 0)) for name in names)
        return {"a": [total, 0, 0, 0]}
    days: dict[str, list[Any]] = {}
    for day, bucket in profile["buckets"].items():
        count = int(sum(bucket.get(name, 0) for name in names))
        if count:
            days[day] = [count, 0, 0, 0]
    newest = max(map(int, days), default=0)
    return {"d": {day: agg for day, agg in days.items() if int(day) > newest - trait.window_days}}


def sync_traits(
    profile: Profile, definitions: Definitions, keep_days: int, fresh: bool = False
) -> None:
    """Bring the customer's trait states in line with ``definitions``.

    Nothing to do while the file is the one the profile was last brought in
    line with (its digest is noted). Otherwise the states of traits no
    longer defined are dropped, and each new trait (new, or edited: a new
    fingerprint) is

    * worked out at once from the profile's counters where they can tell
      (:func:`seeded_state`);
    * otherwise counted from now on: the customer's watermark is noted in
      ``profile["trait_since"]``, and the trait is *backfilling* until its
      window has passed (:func:`backfilling_traits`).

    A ``fresh`` profile (its first event is being applied) has no history to
    miss. A profile kept by a release that did not note the file is taken to
    have been kept under this one.
    """
    if profile.get("trait_digest") == definitions.digest:
        return
    current = {trait.fingerprint: trait for trait in definitions.traits.values()}
    states: dict[str, TraitState] = profile.setdefault("traits", {})
    since: dict[str, int] = profile.setdefault("trait_since", {})
    if "trait_fps" in profile:
        known = set(profile["trait_fps"])
    elif "trait_digest" not in profile and states:
        known = set(current)  # kept before the file was noted: assumed unchanged
    else:
        known = set()
    for stale in [key for key in states if key not in current]:
        del states[stale]
    for stale in [key for key in since if key not in current]:
        del since[stale]
    watermark = profile["last_seen_ms"]
    for fingerprint, trait in current.items():
        if fingerprint in known or fresh or watermark is None:
            continue
        seeded = seeded_state(trait, profile, keep_days)
        if seeded is not None:
            states[fingerprint] = seeded
        else:
            since[fingerprint] = watermark
            states.pop(fingerprint, None)
    if not since:
        del profile["trait_since"]
    profile["trait_fps"] = sorted(current)
    profile["trait_digest"] = definitions.digest


def backfilling_traits(
    profile: Mapping[str, Any], definitions: Definitions, now_ms: int
) -> dict[str, dict[str, int | None]]:
    """The traits that still count only part of the history they cover, by name.

    A trait added while the customer already had history counts the events
    after the customer's watermark at that moment (``since_ms``). A windowed
    one is whole once its window starts after that day (``until_ms``: the
    midnight ``window_days`` days after the day began); a lifetime one never
    is (``until_ms`` is ``None``). Call :func:`sync_traits` first.

    >>> from models.definitions import load_definitions
    >>> defs = load_definitions(
    ...     "version: 1\\ntraits: {big: {aggregate: count, topic: purchases, window_days: 7,"
    ...     " where: [{property: amount, op: '>', value: 9}]}}"
    ... )
    >>> profile = {"trait_since": {defs.traits["big"].fingerprint: 2 * DAY_MS + 5}}
    >>> backfilling_traits(profile, defs, 8 * DAY_MS)
    {'big': {'since_ms': 172800005, 'until_ms': 777600000}}
    >>> backfilling_traits(profile, defs, 9 * DAY_MS)
    {}
    """
    since = profile.get("trait_since")
    if not since:
        return {}
    marked: dict[str, dict[str, int | None]] = {}
    for name, trait in definitions.traits.items():
        start = since.get(trait.fingerprint)
        if start is None:
            continue
        window = trait.window_days
        until = None if window is None else (start // DAY_MS + window) * DAY_MS
        if until is None or now_ms < until:
            marked[name] = {"since_ms": start, "until_ms": until}
    return marked


def backfilling_audiences(definitions: Definitions, traits: Mapping[str, Any]) -> list[str]:
    """The audiences that read a backfilling trait (``traits``, as
    :func:`backfilling_traits` gives them), directly or through another
    audience, in the file's order."""
    if not traits:
        return []
    marked: set[str] = set()
    reads = {
        name: [ref.partition(".")[::2] for ref in audience.names()]
        for name, audience in definitions.audiences.items()
    }
    grew = True
    while grew:  # an audience may read one defined after it
        grew = False
        for name, refs in reads.items():
            if name not in marked and any(
                (ns == "trait" and ref in traits) or (ns == "audience" and ref in marked)
                for ns, ref in refs
            ):
                marked.add(name)
                grew = True
    return [name for name in definitions.audiences if name in marked]


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
