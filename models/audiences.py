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

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from models.definitions import (
    SEEN_DAY,
    Context,
    Definitions,
    Trait,
    TraitState,
    TraitValues,
    count_edge,
    count_lists,
    evaluate_audiences,
    ordered_days,
)
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
# The layout of the trait states, noted with the file's digest (``trait_digest``):
# from 2 on, a windowed state's days are in ascending order; from 3 on, a
# windowed count keeps each day's count alone (``n``, not ``[n, 0, 0, 0]``);
# from 4 on, in two lists (``{"k": [day, ...], "n": [n, ...]}``).
TRAIT_LAYOUT: Final = 4


def audience_dimension(name: str) -> str:
    """The segment dimension audience ``name`` is published as.

    >>> audience_dimension("vip_at_risk")
    'audience.vip_at_risk'
    """
    return AUDIENCE_PREFIX + name


# The built-in metrics only an applied event changes, with the topics whose
# events can: an audience reading one is evaluated again after such an event
# (:func:`fold_traits` notes them). Every other metric moves with time too
# (days since, the windowed counts, CLV): an audience reading one is
# evaluated at every decision.
_EVENT_METRICS: Final[dict[str, tuple[str, ...]]] = {
    "orders": ("purchases",),
    "revenue": ("purchases",),
    "aov": ("purchases",),
    "last_order_at": ("purchases",),
    "open_tickets": ("support",),
    "nps_last": ("support",),
    "last_seen_at": ("clickstream", "purchases", "support"),
    "first_seen_at": ("clickstream", "purchases", "support"),
}

# The metrics that move when a session or order leaves its window.
_WINDOWED: Final = frozenset({"metric.sessions_30d", "metric.orders_90d"})


def audience_dimensions(definitions: Definitions) -> Mapping[str, str]:
    """Each audience's dimension (:func:`audience_dimension`), by name."""
    return _shape(definitions).dimensions


def reads_windows(definitions: Definitions) -> bool:
    """Whether an audience reads a windowed count (decided again at its window edges)."""
    return _shape(definitions).reads_windows


def read_metrics(definitions: Definitions) -> frozenset[str]:
    """The built-in metrics an audience reads (``metric.<name>``), by name."""
    return _shape(definitions).read_metrics


def reads_scores(definitions: Definitions) -> bool:
    """Whether an audience reads a model score (``score.<name>``)."""
    return _shape(definitions).reads_scores


def fold_traits(profile: Profile, event: Mapping[str, Any], definitions: Definitions) -> None:
    """Fold one applied event into the states of the traits it matches.

    A ``track`` event is matched by its name (a trait's ``type``). Call
    :func:`sync_traits` first, so that the states of traits no longer
    defined are gone and new traits are seeded or marked.
    """
    type_ = event.get("type")
    if type_ == "track":
        type_ = event.get("name")
        event = {**event, "type": type_}
    ts = event.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        return  # matched by no trait (Trait.matches)
    shape = _shape(definitions)
    folders = shape.folders
    topic = event.get("topic")
    if isinstance(topic, str) and topic in shape.topic_readers:
        # An audience reads a metric such an event moves.
        events: list[str] = profile.setdefault("events_moved", [])
        if topic not in events:
            events.append(topic)
    candidates = folders.get((topic, type_))
    if candidates is None:  # a type no trait names: the topic's catch-all traits
        candidates = folders.get((topic, None), ())
    states: dict[str, TraitState] = profile.setdefault("traits", {})
    if not candidates:
        return
    moved: list[str] | None = None
    day = ts // DAY_MS
    bands: Sequence[int | None] | None = None  # as the last evaluation noted them
    edges: Sequence[int | None] = ()
    for trait, fingerprint, kind, n in candidates:
        # (of the event's topic and type: Trait.matches, in part)
        if trait.where and not trait.where_holds(event):
            continue
        state = states.get(fingerprint)
        if kind == _COUNT and state is not None and "k" in state:
            # A windowed count (Trait.fold_into, in place): another event on
            # the newest day it holds is one more on that day.
            days: list[int] = state["k"]
            newest = days[-1] if days else None
            if newest == day:
                state["n"][-1] += 1
            else:
                trait.fold_count(state, day, in_place=True)
            # Every day it holds is in the window of the newest: its value,
            # where that is the event's day, is their sum.
            if newest is not None and newest <= day and shape.bands_at[n] is not None:
                if bands is None:
                    bands, edges = _noted(profile, definitions, shape)
                if bands and _holds_band(
                    profile, trait, state, shape, n, bands[n], edges[n], sum(state["n"]), ts
                ):
                    continue
        elif kind == _DISTINCT and state:
            if not trait.fold_distinct_into(state, event):
                continue  # the state holds
            held = state["v"]
            # Every value it holds was last seen in the window of the newest
            # day: where that is the event's, its value is how many it holds.
            if shape.bands_at[n] is not None and max(map(SEEN_DAY, held)) == day:
                if bands is None:
                    bands, edges = _noted(profile, definitions, shape)
                if bands and _holds_band(
                    profile, trait, state, shape, n, bands[n], edges[n], len(held), ts
                ):
                    continue
        else:
            states[fingerprint] = trait.fold_into(state, event)
        if moved is None:
            moved = profile.get("traits_moved")
            if moved is None:
                _every_edge_due(profile)
                moved = profile["traits_moved"] = []
        if fingerprint not in moved:
            moved.append(fingerprint)  # evaluated again at the next decision


# How fold_traits folds a trait (_fold_kind).
_OTHER: Final = 0
_COUNT: Final = 1  # a windowed count
_DISTINCT: Final = 2  # a windowed distinct count


def _fold_kind(trait: Trait) -> int:
    if trait.window_days is None:
        return _OTHER
    if trait.aggregate == "count":
        return _COUNT
    return _DISTINCT if trait.aggregate == "distinct_count" else _OTHER


def _noted(
    profile: Profile, definitions: Definitions, shape: _Shape
) -> tuple[Sequence[int | None], Sequence[int | None]]:
    """The traits' bands and next edges as the last evaluation of the
    customer's audiences noted them; empty where none are usable (as under
    another file)."""
    bands, due = profile.get("trait_bands"), profile.get("trait_due")
    size = len(shape.traits)
    if (
        profile.get("audiences_digest") != definitions.digest
        or bands is None
        or due is None
        or len(bands) != size
        or len(due) != size
    ):
        return (), ()
    return bands, due


def _holds_band(
    profile: Profile,
    trait: Trait,
    state: TraitState,
    shape: _Shape,
    n: int,
    band: int | None,
    edge: int | None,
    value: int,
    now_ms: int,
) -> bool:
    """Of :func:`fold_traits`: whether a windowed count or distinct count
    (the ``n``-th trait, read only against constants) just folded into at
    ``now_ms``, its value now ``value``, is not moved. It is not where it is
    still in the band the last evaluation noted (``band``), so no audience's
    answer can differ from that evaluation's, and every time noted from it
    holds:

    * its next window edge (``edge``, as noted) is as it was. A count's is
      while no day has left the window since it was noted: the event's day
      is its newest, and no earlier one leaves sooner. (In its lowest band,
      an edge passed since is no matter: it moves at the next decision
      anyway.) A distinct count's is unless the event's value was the first
      to leave.
    * its turn, where its value falls out of that band with time, can only
      come later than noted: the value falls no sooner than it would have
      without the event. In its lowest band it has none. In a higher band it
      is marked unknown (worked out again where a decision needs it), unless
      the audiences are due at that turn.
    """
    if band is None:
        return False
    spec = shape.bands_at[n]
    if spec is None or edge is None or trait_band(value, True, spec[1]) != band:
        return False
    if "k" in state:
        if band == 0:
            return True
        if edge <= now_ms:
            return False
    elif edge <= now_ms or next_edge(trait, state, now_ms)[0] != edge:
        return False
    elif band == 0:
        return True
    turns = profile.get("trait_turns")
    if turns is None or len(turns) != len(shape.traits):
        return False
    turn = turns[n]
    if turn is not None and turn == profile.get("audiences_due_ms"):
        return False  # the audiences are due at that turn
    if turn != _UNKNOWN:
        turns = profile["trait_turns"] = list(turns)
        turns[n] = _UNKNOWN
    return True


def _every_edge_due(profile: Profile) -> None:
    """A trait moved since the audiences were last evaluated: the window edges
    :func:`note_next_change` passed over as unable to move an audience were
    judged on the states as they were, so the audiences are due again at the
    first edge of any trait (``trait_edge_ms``, or sooner, as noted)."""
    if "trait_edge_ms" in profile:
        first = profile["trait_edge_ms"]
    else:  # noted by an earlier release
        first = min(
            (when for when in profile.get("trait_due") or () if when is not None), default=None
        )
    if first is not None:
        due = profile.get("audiences_due_ms")
        if due is None or first < due:
            profile["audiences_due_ms"] = first


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
    {'k': [10, 12], 'n': [2, 1]}
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
    days: dict[str, int] = {}
    for day, bucket in profile["buckets"].items():
        count = int(sum(bucket.get(name, 0) for name in names))
        if count:
            days[day] = count
    newest = max(map(int, days), default=0)
    return count_lists({day: n for day, n in days.items() if int(day) > newest - trait.window_days})


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
    have been kept under this one. States kept in an earlier layout
    (:data:`TRAIT_LAYOUT`) are brought to this one.
    """
    noted = synced_digest(definitions)
    if profile.get("trait_digest") == noted:
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
    for fingerprint, state in states.items():
        if "d" in state:  # (new dicts: a profile view syncs a shallow copy)
            states[fingerprint] = _in_layout(current[fingerprint], state["d"])
    profile["trait_fps"] = sorted(current)
    profile["trait_digest"] = noted


def _in_layout(trait: Trait, days: Mapping[str, Any]) -> TraitState:
    """A windowed state kept as ``{"d": days}`` as :data:`TRAIT_LAYOUT` keeps
    it: the days in ascending order (layout 1 kept them in the order they
    came); a count's days and counts in two lists (layout 2 kept
    ``{"<day>": [n, 0, 0, 0]}``, layout 3 ``{"<day>": n}``).

    >>> _in_layout(Trait("n", "count", "support", window_days=7), {"9": [2, 0, 0, 0], "3": 1})
    {'k': [3, 9], 'n': [1, 2]}
    """
    if trait.aggregate == "count":
        return count_lists(days)
    return {"d": ordered_days(days)}


def synced_digest(definitions: Definitions) -> str:
    """What ``profile["trait_digest"]`` says once the profile's trait states
    are in line with ``definitions``: the file's digest and the states'
    layout."""
    return _shape(definitions).synced


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
    shape = _shape(definitions)
    marked: set[str] = set()
    for trait in traits:
        marked |= shape.readers.get(trait, frozenset())
    for name, _, _, read_by in shape.audiences:  # an audience reads only those above it
        if name in marked:
            marked |= read_by
    return [name for name, *_ in shape.audiences if name in marked]


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
) -> Mapping[str, Any]:
    """The built-in metrics an audience reads, as of ``now_ms``, each worked
    out when first read (:class:`BuiltInMetrics`)."""
    return BuiltInMetrics(profile, now_ms, sessions_30d, orders_90d, clv)


def _days_since(now_ms: int, then_ms: int | None) -> float | None:
    return round((now_ms - then_ms) / DAY_MS, 3) if then_ms is not None else None


def _aov(profile: Profile) -> float | None:
    orders = int(profile["totals"].get("orders", 0))
    return round(net_revenue(profile["totals"]) / orders, 2) if orders else None


# How each of METRICS is worked out: (profile, now_ms, sessions_30d, orders_90d, clv) -> value.
_METRIC_READERS: Final[dict[str, Callable[[Profile, int, int, int, float | None], Any]]] = {
    "orders": lambda p, now, s, o, clv: int(p["totals"].get("orders", 0)),
    "revenue": lambda p, now, s, o, clv: round(net_revenue(p["totals"]), 2),
    "aov": lambda p, now, s, o, clv: _aov(p),
    "sessions_30d": lambda p, now, s, o, clv: s,
    "orders_90d": lambda p, now, s, o, clv: o,
    "days_since_last_order": lambda p, now, s, o, clv: _days_since(now, p["last_order_ms"]),
    "days_since_last_seen": lambda p, now, s, o, clv: _days_since(now, p["last_seen_ms"]),
    "last_order_at": lambda p, now, s, o, clv: p["last_order_ms"],
    "last_seen_at": lambda p, now, s, o, clv: p["last_seen_ms"],
    "first_seen_at": lambda p, now, s, o, clv: p["first_seen_ms"],
    "open_tickets": lambda p, now, s, o, clv: len(p["open_tickets"]),
    "nps_last": lambda p, now, s, o, clv: p["nps_last"],
    "clv": lambda p, now, s, o, clv: round(clv, 2) if clv is not None else None,
}
assert tuple(_METRIC_READERS) == METRICS  # noqa: S101 - one reader per metric, in order


class BuiltInMetrics(Mapping[str, Any]):
    """The built-in metrics as of ``now_ms``, each worked out when first read:
    an audience reads few of them. Read them in the same decision: the
    profile's fields are read when asked.

    >>> from models.profile import new_profile
    >>> profile = new_profile()
    >>> profile["totals"] = {"orders": 2, "revenue": 30.0}
    >>> profile["last_order_ms"] = 0
    >>> m = BuiltInMetrics(profile, DAY_MS // 2, 3, 2, 41.256)
    >>> m["aov"], m.get("days_since_last_order"), m["clv"], m.get("nope", "-")
    (15.0, 0.5, 41.26, '-')
    >>> list(m) == list(METRICS), len(m)
    (True, 13)
    """

    __slots__ = ("_args", "_known")

    def __init__(
        self, profile: Profile, now_ms: int, sessions_30d: int, orders_90d: int, clv: float | None
    ) -> None:
        self._args = (profile, now_ms, sessions_30d, orders_90d, clv)
        self._known: dict[str, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        known = self._known
        if name in known:
            return known[name]
        reader = _METRIC_READERS.get(name)
        if reader is None:
            return default
        value = known[name] = reader(*self._args)
        return value

    def __getitem__(self, name: str) -> Any:
        if name not in _METRIC_READERS:
            raise KeyError(name)
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(METRICS)

    def __len__(self) -> int:
        return len(METRICS)


class SegmentValues(Mapping[str, Any]):
    """The built-in segments' values, read from the held segment entries
    (by dimension) when an audience asks; audiences are left out.

    >>> values = SegmentValues({"churn_risk": {"value": "high"}, "audience.a": {"value": "in"}})
    >>> values.get("churn_risk"), values.get("audience.a"), dict(values)
    ('high', None, {'churn_risk': 'high'})
    """

    __slots__ = ("_held",)

    def __init__(self, held: Mapping[str, Mapping[str, Any]]) -> None:
        self._held = held

    def get(self, name: str, default: Any = None) -> Any:
        entry = self._held.get(name)
        if entry is None or "." in name:
            return default
        return entry["value"]

    def __getitem__(self, name: str) -> Any:
        if "." in name or name not in self._held:
            raise KeyError(name)
        return self._held[name]["value"]

    def __iter__(self) -> Iterator[str]:
        return (dim for dim in self._held if "." not in dim)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def audience_context(
    profile: Profile,
    definitions: Definitions,
    now_ms: int,
    built_in: Mapping[str, Any],
    scores: Mapping[str, Any],
    held: Mapping[str, Mapping[str, Any]],
) -> Context:
    """What the customer's audiences read at ``now_ms``: traits, ``built_in``
    metrics (:func:`metrics`), model ``scores`` and the built-in segments
    ``held`` (the segment entries, by dimension, read as their values)."""
    return Context(
        now_ms=now_ms,
        traits=TraitValues(definitions, profile.get("traits", {}), now_ms),
        metrics=built_in,
        # The scorer's own mapping: an audience reads only names of SCORES
        # (the loader checks), each with .get, so no copy is made.
        scores=scores,
        segments=SegmentValues(held),
    )


# -- deciding only what can have moved --------------------------------------------


def falls_only(trait: Trait, state: TraitState | None, today: int) -> bool:
    """Whether the trait's value can only fall, or stay, until the customer's
    next event: a windowed count, distinct count, or sum of amounts none
    below zero, with no day after ``today`` still to enter its window."""
    if not state or trait.window_days is None:
        return True  # nothing to leave the window: no edge at all
    if trait.aggregate == "distinct_count":
        return all(day <= today for _, day in state["v"])
    if trait.aggregate not in ("count", "sum"):
        return False
    if "k" in state:  # a windowed count: it rises only where a day is still to enter
        held: list[int] = state["k"]
        return not held or held[-1] <= today
    days = state["d"]
    if days and int(next(reversed(days))) > today:  # the days are in order
        return False
    return trait.aggregate == "count" or all(agg[1] >= 0 for agg in days.values())


def next_edge(trait: Trait, state: TraitState | None, now_ms: int) -> tuple[int | None, bool]:
    """The trait's next window edge after ``now_ms`` (:meth:`Trait.next_change_ms`)
    and whether the trait can rise before the customer's next event (not
    :func:`falls_only`), in one pass over the days of a windowed count or sum.

    >>> t = Trait("spend_7d", "sum", "purchases", "order", property="amount", window_days=7)
    >>> state = t.fold(t.fold(None, {"ts": 0, "amount": 5}), {"ts": 2 * DAY_MS, "amount": -1})
    >>> next_edge(t, state, DAY_MS) == (2 * DAY_MS, True)  # day 2 still to enter
    True
    >>> next_edge(t, state, 3 * DAY_MS) == (7 * DAY_MS, True)  # a refund leaves: can rise
    True
    """
    today = now_ms // DAY_MS
    window = trait.window_days
    if not state or window is None:
        return None, False
    held = state.get("k")
    if held is not None:  # a windowed count: only a day still to enter raises it
        return count_edge(held, window, today)
    if "v" in state:
        # A windowed distinct count: each value's last day enters its window
        # (a day after today's) or leaves it; a day still to enter can raise it.
        first: int | None = None
        later = False
        for _, day in state["v"]:
            if day > today:
                later = True
                moment = day
            else:
                moment = day + window
            if moment > today and (first is None or moment < first):
                first = moment
        return (None, False) if first is None else (first * DAY_MS, later)
    if ("d" not in state and "k" not in state) or trait.aggregate not in ("count", "sum"):
        when = trait.next_change_ms(state, now_ms)
        return when, when is not None and not falls_only(trait, state, today)
    when, later, negative = trait.scan_days(state, now_ms)
    if when is None:
        return None, False
    return when, later or (trait.aggregate == "sum" and negative)


def edge_can_move(
    rises: bool, followers: tuple[tuple[str, int], ...], members: Mapping[str, bool]
) -> bool:
    """Whether a trait's next window edge can move an audience: one reads it
    (``followers``: each with its direction), and either the trait can rise
    before the next event (``rises``: not :func:`falls_only`) or its fall
    can take the customer in or out of one (``members``: the memberships)."""
    if not followers:
        return False
    if rises:
        return True
    # Falling takes nobody into an audience that follows the trait up (1),
    # nor out of one that follows it down (-1).
    for name, way in followers:
        if way == 0 or (way > 0) == members[name]:
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Shape:
    """Who reads what in one definitions file, worked out once per file (by
    its digest) for the per-event and per-decision work."""

    reads_windows: bool  # an audience reads a windowed count metric
    reads_scores: bool  # an audience reads a model score
    read_metrics: frozenset[str]  # the metrics an audience reads
    # (topic, type) -> the traits an event of that kind may match; (topic,
    # None) -> the topic's catch-all traits, for a type no trait names
    # (each as (trait, its fingerprint, its _fold_kind, its place in the file))
    folders: Mapping[tuple[Any, Any], tuple[tuple[Trait, str, int, int], ...]]
    trait_names: tuple[str, ...]  # in the file's order (``trait_due``'s)
    trait_index: Mapping[str, int]  # trait name -> its place in that order
    audience_index: Mapping[str, int]  # audience name -> its place in the file
    traits: tuple[Trait, ...]  # in the same order
    # the followers (below) of each trait, in the same order
    followers_at: tuple[tuple[tuple[str, int], ...], ...]
    timed: tuple[Any, ...]  # the audiences with a days_since test, in the file's order
    # by trait, in the same order: whether an audience follows it either way (0)
    followed_either_way: tuple[bool, ...]
    by_fingerprint: Mapping[str, str]  # trait fingerprint -> name
    readers: Mapping[str, frozenset[str]]  # trait -> the audiences that read it directly
    # trait -> (audience, direction) for each audience that follows it,
    # directly or through another (models.definitions.Audience.directions)
    followers: Mapping[str, tuple[tuple[str, int], ...]]
    # each audience, in the file's order: (name, its compiled condition
    # (Audience.compiled), its dimension, the audiences that read it directly)
    audiences: tuple[tuple[str, Callable[[Context], Any], str, frozenset[str]], ...]
    # the places in the file of the audiences evaluated at every decision: they
    # read a score, a metric that moves with time, or days_since other than
    # in a comparison whose flip is noted
    always_at: tuple[int, ...]
    # built-in dimension -> the places of the audiences that read it
    segment_readers: Mapping[str, tuple[int, ...]]
    # topic -> the places of the audiences reading a metric its events move
    topic_readers: Mapping[str, tuple[int, ...]]
    timed_at: tuple[int, ...]  # the places of the timed audiences, in their order
    timed_index: Mapping[str, int]  # a timed audience's name -> its place among them
    readers_at: Mapping[str, tuple[int, ...]]  # trait -> the places of its readers
    read_by_at: tuple[tuple[int, ...], ...]  # by audience: the places of those that read it
    dimensions: Mapping[str, str]  # audience -> its dimension (audience_dimension)
    # By trait, in the same order: for a windowed count, the counts at which
    # an audience's answer may turn (Audience.count_bounds, over all of
    # them), ascending; None for any other trait or one read otherwise. None
    # for the whole file where an audiences decision can find a move no
    # trait's turn explains (_turns_at).
    turns_at: tuple[tuple[int, ...] | None, ...] | None
    # By trait, in the same order: (whether it is a count, its marks) where
    # every audience compares it only with constants (trait_band); None
    # where one reads it otherwise.
    bands_at: tuple[tuple[bool, tuple[float, ...]] | None, ...]
    synced: str  # synced_digest's answer


_SHAPES: dict[str, _Shape] = {}  # by the definitions' digest


def _shape(definitions: Definitions) -> _Shape:
    shape = _SHAPES.get(definitions.digest)
    if shape is None:
        shape = _SHAPES[definitions.digest] = _work_out_shape(definitions)
    return shape


def _work_out_shape(definitions: Definitions) -> _Shape:
    traits = list(definitions.traits.values())
    place = {name: n for n, name in enumerate(definitions.traits)}
    kinds: set[tuple[str, str | None]] = {(t.topic, t.type) for t in traits if t.type}
    kinds |= {(topic, None) for topic in _COUNTED_TYPES}
    by_kind = {
        (topic, type_): tuple(t for t in traits if t.topic == topic and t.type in (type_, None))
        for topic, type_ in kinds
    }
    reads: dict[str, list[tuple[str, str]]] = {
        name: [ref.partition(".")[::2] for ref in audience.names()]
        for name, audience in definitions.audiences.items()
    }
    directions: dict[str, dict[str, int]] = {}
    for name, audience in definitions.audiences.items():
        directions[name] = audience.directions(directions)  # earlier ones only
    followers: dict[str, list[tuple[str, int]]] = {name: [] for name in definitions.traits}
    for name, ways in directions.items():
        for trait, way in ways.items():
            followers[trait].append((name, way))

    def read(name: str, namespace: str) -> frozenset[str]:
        return frozenset(ref for ns, ref in reads[name] if ns == namespace)

    audience_index = {name: n for n, name in enumerate(definitions.audiences)}
    readers = {
        trait: frozenset(a for a in reads if trait in read(a, "trait"))
        for trait in definitions.traits
    }
    always = frozenset(
        name
        for name, audience in definitions.audiences.items()
        if not audience.tests_all_time()
        or any(
            ns == "score" or (ns == "metric" and ref not in _EVENT_METRICS)
            for ns, ref in reads[name]
        )
    )
    segment_readers: dict[str, list[int]] = {}
    topic_readers: dict[str, list[int]] = {}
    for name, refs in reads.items():
        at = audience_index[name]
        for ns, ref in refs:
            if ns == "segment" and at not in segment_readers.setdefault(ref, []):
                segment_readers[ref].append(at)
            for topic in _EVENT_METRICS.get(ref, ()) if ns == "metric" else ():
                if at not in topic_readers.setdefault(topic, []):
                    topic_readers[topic].append(at)
    timed = tuple(a for a in definitions.audiences.values() if a.has_time_tests)
    bands_at = _bands_at(definitions, traits)
    audiences = tuple(
        (
            name,
            audience.compiled(),
            audience_dimension(name),
            frozenset(a for a in reads if name in read(a, "audience")),
        )
        for name, audience in definitions.audiences.items()
    )
    return _Shape(
        reads_windows=any(
            f"{ns}.{ref}" in _WINDOWED for refs in reads.values() for ns, ref in refs
        ),
        reads_scores=any(ns == "score" for refs in reads.values() for ns, _ in refs),
        read_metrics=frozenset(
            ref for refs in reads.values() for ns, ref in refs if ns == "metric"
        ),
        folders={
            kind: tuple((t, t.fingerprint, _fold_kind(t), place[t.name]) for t in matching)
            for kind, matching in by_kind.items()
        },
        trait_names=tuple(definitions.traits),
        trait_index=place,
        audience_index=audience_index,
        traits=tuple(traits),
        followers_at=tuple(tuple(followers[name]) for name in definitions.traits),
        followed_either_way=tuple(
            any(way == 0 for _, way in followers[name]) for name in definitions.traits
        ),
        timed=timed,
        timed_at=tuple(audience_index[a.name] for a in timed),
        timed_index={a.name: n for n, a in enumerate(timed)},
        by_fingerprint={t.fingerprint: name for name, t in definitions.traits.items()},
        readers=readers,
        followers={trait: tuple(f) for trait, f in followers.items()},
        audiences=audiences,
        always_at=tuple(sorted(audience_index[name] for name in always)),
        segment_readers={dim: tuple(places) for dim, places in segment_readers.items()},
        topic_readers={topic: tuple(places) for topic, places in topic_readers.items()},
        readers_at={
            trait: tuple(sorted(audience_index[a] for a in names))
            for trait, names in readers.items()
        },
        read_by_at=tuple(
            tuple(sorted(audience_index[a] for a in read_by)) for *_, read_by in audiences
        ),
        dimensions={name: dim for name, _, dim, _ in audiences},
        turns_at=_turns_at(definitions, traits)
        if not always and "clickstream" not in topic_readers
        else None,
        bands_at=bands_at,
        synced=f"{definitions.digest}/{TRAIT_LAYOUT}",
    )


def _turns_at(
    definitions: Definitions, traits: Sequence[Trait]
) -> tuple[tuple[int, ...] | None, ...]:
    """:attr:`_Shape.turns_at` where turns apply: an audiences decision
    between events then moves an audience only where a trait's window edge
    turns the answer of a comparison it reads. It does not where an audience
    is evaluated at every decision (it reads what moves with time) or reads
    a metric a click moves (a click is no decision point, so such an audience
    follows at the next audiences decision, whatever is due there)."""
    bounds: dict[str, set[int] | None] = {name: set() for name in definitions.traits}
    for audience in definitions.audiences.values():
        for name, found in audience.count_bounds().items():
            held = bounds.get(name)
            if held is not None:
                if found is None:
                    bounds[name] = None
                else:
                    held |= found
    return tuple(
        tuple(sorted(found))
        if found is not None and trait.aggregate == "count" and trait.window_days is not None
        else None
        for trait, found in zip(traits, bounds.values(), strict=True)
    )


def _bands_at(
    definitions: Definitions, traits: Sequence[Trait]
) -> tuple[tuple[bool, tuple[float, ...]] | None, ...]:
    """:attr:`_Shape.bands_at`: a count or distinct count is marked by the
    counts at which an answer may turn (:meth:`Audience.count_bounds`), any
    other trait by the numbers it is compared with
    (:meth:`Audience.compared_numbers`)."""
    marks: dict[str, set[float] | None] = {name: set() for name in definitions.traits}
    counted = {
        name: trait.aggregate in ("count", "distinct_count")
        for name, trait in definitions.traits.items()
    }
    for audience in definitions.audiences.values():
        bounds, numbers = audience.count_bounds(), audience.compared_numbers()
        for name, found in numbers.items():
            held = marks[name]
            if held is None:
                continue
            joined = bounds[name] if counted[name] else found
            if joined is None:
                marks[name] = None
            else:
                held |= joined
    return tuple(
        None if found is None else (counted[name], tuple(sorted(found)))
        for name, found in ((trait.name, marks[trait.name]) for trait in traits)
    )


def trait_band(value: Any, counted: bool, marks: Sequence[float]) -> int | None:
    """Where a trait's ``value`` lies among its ``marks`` (:attr:`_Shape.bands_at`):
    every comparison of the trait with a constant answers alike for two
    values in the same band. ``-1`` for null; ``None`` for a value that is
    neither a number nor null (a ``latest`` text), which is never taken to
    be in the band it was.

    A count's marks are the counts ``k`` at which an answer may differ
    for ``k`` and ``k + 1``: its band is how many lie below it. Any other
    value's band says how many marks lie below it and whether it is one.

    >>> [trait_band(n, True, (1,)) for n in (0, 1, 2, 3)]  # orders_30d >= 2
    [0, 0, 1, 1]
    >>> [trait_band(x, False, (100,)) for x in (None, 99.5, 100, 250.0, "a")]
    [-1, 0, 1, 2, None]
    """
    if value is None:
        return -1
    kind = type(value)
    if kind is not int and kind is not float:  # (a bool is no number here)
        return None
    if counted:
        return bisect_left(marks, value)
    if not math.isfinite(value):
        return None
    at = bisect_left(marks, value)
    return 2 * at + (1 if at < len(marks) and marks[at] == value else 0)


def answering_traits(
    definitions: Definitions,
    values: Mapping[str, Any],
    moved: set[str] | None,
    noted: Sequence[int | None] | None,
) -> tuple[set[str] | None, list[int | None]]:
    """Of the ``moved`` traits (:func:`moved_traits`), those whose move can
    change an audience's answer, and every trait's band as of ``values``
    (the trait values read now), for ``profile["trait_bands"]``.

    A trait every audience compares only with constants can change an
    answer only by leaving the band (:func:`trait_band`) it had at the last
    evaluation, ``noted``: between evaluations a trait's value changes only
    where it moved, so each audience reading it last read it in that band.
    Any other moved trait is kept. ``None`` in, ``None`` out: all are
    evaluated, and every band is worked out. A list comes back as ``noted``
    itself where no band changed.
    """
    shape = _shape(definitions)
    specs = shape.bands_at
    if moved is None or noted is None or len(noted) != len(specs):
        names = shape.trait_names
        bands = [
            None if spec is None else trait_band(values.get(name), spec[0], spec[1])
            for name, spec in zip(names, specs, strict=True)
        ]
        return moved, bands
    index = shape.trait_index
    changed: set[str] = set()
    bands = noted if isinstance(noted, list) else list(noted)
    for name in moved:
        n = index[name]
        spec = specs[n]
        if spec is None:
            changed.add(name)
            continue
        value = values.get(name)
        counted, marks = spec
        if counted and type(value) is int:
            band: int | None = bisect_left(marks, value)  # (trait_band's own way)
        else:
            band = trait_band(value, counted, marks)
        if band is None or band != noted[n]:
            changed.add(name)
            if band != noted[n]:
                if bands is noted:
                    bands = list(noted)
                bands[n] = band
    return changed, bands


def next_turn(trait: Trait, state: TraitState, now_ms: int, bounds: Sequence[int]) -> int | None:
    """For a windowed count that can only fall until the next event (no day
    after ``now_ms``'s held): the first window edge after ``now_ms`` at which
    its value crosses one of ``bounds`` (ascending; see
    :meth:`models.definitions.Audience.count_bounds`), or ``None`` when none
    is left below it. Between now and then the answers of the comparisons
    that give ``bounds`` hold.

    >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
    >>> state = {"k": [0, 1, 2], "n": [1, 1, 1]}  # 3 as of day 2, then 2, 1, 0
    >>> next_turn(t, state, 2 * DAY_MS, (1,)) == 8 * DAY_MS  # ">= 2": 2 until day 8
    True
    >>> next_turn(t, state, 2 * DAY_MS, (5,)) is None  # ">= 6": never true again
    True
    """
    window = trait.window_days
    assert window is not None  # noqa: S101 - windowed counts only
    days: list[int] = state["k"]
    counts: list[int] = state["n"]
    start = bisect_right(days, now_ms // DAY_MS - window)  # those still in the window
    count = sum(counts[start:])
    below = bisect_left(bounds, count) - 1  # the highest bound under the count
    if below < 0:
        return None
    bound = bounds[below]
    for n in range(start, len(days)):
        count -= counts[n]
        if count <= bound:
            return (days[n] + window) * DAY_MS
    return None  # (the bound is below zero)


def next_band_change(
    trait: Trait, state: TraitState, now_ms: int, counted: bool, marks: Sequence[float]
) -> int | None:
    """The first window edge after ``now_ms`` at which the trait's value,
    with no new event, lies in another band (:func:`trait_band`) than now,
    or ``None`` when none does. Between now and then every comparison of
    the trait with a constant answers as now.

    A distinct count or a sum with no day after now's to enter its window
    only loses days: each day's leaving is looked at in turn, the value
    then worked out as :meth:`Trait.value` does. Any other trait's edges
    are walked one by one (a bounded number: past it, the last one walked
    is given, where a decision finds nothing new).

    >>> t = Trait("spend_30d", "sum", "purchases", "order", property="amount", window_days=30)
    >>> s = t.fold(t.fold(None, {"ts": 0, "amount": 80}), {"ts": 5 * DAY_MS, "amount": 50})
    >>> next_band_change(t, s, 6 * DAY_MS, False, (100,)) == 30 * DAY_MS  # 130, then 50
    True
    >>> next_band_change(t, s, 6 * DAY_MS, False, (10,)) == 35 * DAY_MS  # 130, 50, then 0
    True
    """
    window = trait.window_days
    if window is not None:
        gone = now_ms // DAY_MS - window  # days up to this one are out of the window
        if "v" in state:  # a distinct count: each value's last day leaves
            days: list[int] = sorted(day for _, day in state["v"] if day > gone)
            if not days or days[-1] <= gone + window:
                held = len(days)
                band = trait_band(held, counted, marks)
                for n, day in enumerate(days):
                    if n + 1 < held and days[n + 1] == day:
                        continue  # that day's values leave together
                    if trait_band(held - n - 1, counted, marks) != band:
                        return (day + window) * DAY_MS
                return None
        elif "d" in state and trait.aggregate == "sum":
            parts = [(int(key), agg) for key, agg in state["d"].items() if int(key) > gone]
            if not parts or parts[-1][0] <= gone + window:
                sums = []  # what the days from each one on add up to, in order as Trait.value does
                for n in range(len(parts)):
                    added = 0
                    for _, agg in parts[n:]:
                        if agg[0] > 0:
                            added += agg[1]
                    sums.append(added)
                band = trait_band(sums[0] if sums else 0, counted, marks)
                for n, (day, agg) in enumerate(parts):
                    left = sums[n + 1] if n + 1 < len(parts) else 0
                    if agg[0] > 0 and trait_band(left, counted, marks) != band:
                        return (day + window) * DAY_MS
                return None
    band = trait_band(trait.value(state, now_ms), counted, marks)
    moment = now_ms
    for _ in range(_BAND_EDGES):
        edge = trait.next_change_ms(state, moment)
        if edge is None or band is None:
            return edge
        if trait_band(trait.value(state, edge), counted, marks) != band:
            return edge
        moment = edge
    return moment


# A trait's turn not worked out yet (profile["trait_turns"]).
_UNKNOWN: Final = -1

# How many window edges next_band_change walks at most.
_BAND_EDGES: Final = 64


def moved_traits(profile: Profile, definitions: Definitions, now_ms: int) -> set[str] | None:
    """The traits whose value may differ from the last evaluation of the
    customer's audiences, by name; ``None``: all of them (the first
    evaluation under this file).

    A trait moves when an event is folded into it (:func:`fold_traits` notes
    it) or when one of its days enters or leaves its window: the time of
    that, worked out at the last evaluation, is in ``profile["trait_due"]``.
    """
    due = profile.get("trait_due")
    if profile.get("audiences_digest") != definitions.digest or due is None:
        return None
    shape = _shape(definitions)
    by_fingerprint = shape.by_fingerprint
    folded = profile.get("traits_moved")
    moved = {by_fingerprint[fp] for fp in folded if fp in by_fingerprint} if folded else set()
    edge = profile.get("trait_edge_ms", now_ms)  # the first of them (absent: look)
    if edge is not None and edge <= now_ms:
        names = shape.trait_names
        for n, when in enumerate(due):
            if when is not None and when <= now_ms:
                moved.add(names[n])
    return moved


class Memberships(dict[str, bool]):
    """Audience memberships by name: those evaluated are set; any other is
    read from its held segment entry (``held``, by dimension; no entry:
    out) when first asked, so a decision pays only for those it reads.
    Iterating gives only those set or read so far.

    >>> members = Memberships({"audience.vip": {"value": "in"}})
    >>> members["fresh"] = False
    >>> members["vip"], members.get("gone"), list(members)
    (True, False, ['fresh', 'vip', 'gone'])
    """

    __slots__ = ("_held",)

    def __init__(self, held: Mapping[str, Mapping[str, Any]]) -> None:
        self._held = held  # (dict.__new__ made it empty)

    def __missing__(self, name: str) -> bool:
        entry = self._held.get(AUDIENCE_PREFIX + name)
        inside = self[name] = entry is not None and entry["value"] == "in"
        return inside

    def get(self, name: str, default: Any = None) -> Any:
        return self[name]


def evaluate_moved(
    definitions: Definitions,
    context: Context,
    held: Mapping[str, Mapping[str, Any]],
    moved: set[str] | None,
    held_back: Iterable[str] | None = None,
    segments_moved: Iterable[str] = (),
    events_moved: Iterable[str] = (),
    flips: Sequence[int | None] | None = None,
) -> tuple[dict[str, bool], Context, list[str] | None]:
    """Every audience's membership, evaluating only those whose inputs can
    have moved since the last evaluation (``moved``: :func:`moved_traits`);
    with it, ``context``, given those memberships as its audiences (it is
    changed: make one per evaluation), and the names of those evaluated, in
    the file's order (``None``: all).

    An audience is evaluated again when it reads

    * a moved trait;
    * a built-in segment that moved in this decision (``segments_moved``);
    * a metric only events move, and an event of a topic that moves it was
      applied since (``events_moved``, as :func:`fold_traits` noted them);
    * a score, or a metric that moves with time as well;
    * ``days_since`` in a comparison whose flip has come (``flips``: each
      timed audience's, as :func:`note_next_change` noted them; ``None``:
      all have), or ``days_since`` elsewhere;
    * or an audience evaluated again;

    or when the dwell holds a move of it back (``pending``; ``held_back``:
    those audiences, as :func:`note_next_change` noted them, or ``None`` to
    find them in ``held``). Any other keeps
    the membership its last evaluation gave, which its held segment entry
    (``held``, by dimension) shows: no entry is "out" (a
    :class:`Memberships` reads it when asked). The memberships equal
    :func:`models.definitions.evaluate_audiences` of the same context.
    """
    if moved is None:
        everything = evaluate_audiences(definitions, context)
        context.audiences = everything
        return everything, context, None
    members = Memberships(held)
    reading = context
    reading.audiences = members
    shape = _shape(definitions)
    due = set(shape.always_at)
    readers_at = shape.readers_at
    for trait in moved:
        due.update(readers_at[trait])
    for dim in segments_moved:
        due.update(shape.segment_readers.get(dim, ()))
    for topic in events_moved:
        due.update(shape.topic_readers.get(topic, ()))
    timed_at = shape.timed_at
    if flips is None or len(flips) != len(timed_at):
        due.update(timed_at)
    else:
        now = context.now_ms
        for at, flip in zip(timed_at, flips, strict=True):
            if flip is not None and flip <= now:
                due.add(at)  # a days_since test flips
    if held_back is None:
        held_back = [
            dim[len(AUDIENCE_PREFIX) :]
            for dim, entry in held.items()
            if "pending" in entry and dim.startswith(AUDIENCE_PREFIX)
        ]
    for name in held_back:
        place = shape.audience_index.get(name)
        if place is not None:
            due.add(place)  # a dwell-held move
    again: list[str] = []
    audiences, read_by_at = shape.audiences, shape.read_by_at
    # In file order: an audience reads only those above it.
    order = sorted(due)
    for n in order:  # (grows as it goes: only with places after n)
        name, check, _, _ = audiences[n]
        members[name] = check(reading) is True
        again.append(name)
        for later in read_by_at[n]:  # later audiences that read this one
            if later not in due:
                due.add(later)
                insort(order, later)
    return members, reading, again


def nothing_due(
    profile: Profile, definitions: Definitions, now_ms: int, segments_moved: Iterable[str]
) -> bool:
    """Whether no audience can have moved since the audiences were last
    evaluated, with the built-in dimensions ``segments_moved`` moved since,
    so that an evaluation would evaluate none (:func:`evaluate_moved`) and
    note nothing new (:func:`note_next_change`). That holds where

    * no audience is evaluated at every decision, no trait was folded into,
      no event an audience's metric reads was applied, no ``days_since``
      test has flipped, no move is held back, and no audience reads a
      segment that moved;
    * and no trait has reached its next window edge, or each that has is
      still in the band it was noted in (:func:`answering_traits`) and
      cannot rise, and the audiences are not due yet. Those traits' next
      edges are then noted, as :func:`note_next_change` would: every other
      time noted holds (a trait's turn is where its band changes, still
      ahead, and none can rise: a day still to enter would have made it
      rising).

    ``False``, with nothing changed, where any of that does not hold (or the
    profile was last evaluated under another file or by an earlier
    release): the audiences are evaluated."""
    shape = _shape(definitions)
    if (
        shape.always_at
        or profile.get("traits_moved")
        or profile.get("events_moved")
        or profile.get("audiences_held")
        or profile.get("audiences_digest") != definitions.digest
        or profile.get("trait_digest") != shape.synced
        or "trait_edge_ms" not in profile
        or "audience_flips" not in profile
    ):
        return False
    for flip in profile["audience_flips"]:
        if flip is not None and flip <= now_ms:
            return False
    if segments_moved:
        readers = shape.segment_readers
        for dim in segments_moved:
            if dim in readers:
                return False
    edge = profile["trait_edge_ms"]
    if edge is None or edge > now_ms:
        return True
    return _quiet_edges(profile, definitions, shape, now_ms)


def _quiet_edges(profile: Profile, definitions: Definitions, shape: _Shape, now_ms: int) -> bool:
    """Of :func:`nothing_due`: whether every trait whose window edge has
    passed keeps its band and cannot rise, the audiences not due yet; where
    so, those traits' next edges are noted."""
    first = profile.get("audiences_due_ms")
    if first is not None and first <= now_ms:
        return False
    due, bands, turns = (
        profile.get("trait_due"),
        profile.get("trait_bands"),
        profile.get("trait_turns"),
    )
    size = len(shape.traits)
    if (
        due is None
        or bands is None
        or turns is None
        or not len(due) == len(bands) == len(turns) == size
    ):
        return False
    rising = profile.get("traits_rising") or ()
    states = profile.get("traits", {})
    readers = definitions.readers
    passed: list[tuple[int, int | None]] = []
    for n, when in enumerate(due):
        if when is None or when > now_ms:
            continue
        spec = shape.bands_at[n]
        if spec is None or n in rising:
            return False
        trait = shape.traits[n]
        state = states.get(trait.fingerprint)
        band = trait_band(readers[trait.name][1](state, now_ms), spec[0], spec[1])
        if band is None or band != bands[n]:
            return False
        after, rises = next_edge(trait, state, now_ms)
        if rises:
            return False
        passed.append((n, after))
    due, turns = list(due), list(turns)
    for n, after in passed:
        due[n] = after
        turns[n] = _UNKNOWN  # (worked out again where it is needed)
    profile["trait_due"] = due
    profile["trait_turns"] = turns
    profile["trait_edge_ms"] = min((when for when in due if when is not None), default=None)
    return True


def note_next_change(
    profile: Profile,
    definitions: Definitions,
    context: Context,
    moved: set[str] | None,
    members: Mapping[str, bool],
    every_edge: bool = False,
    evaluated: Iterable[str] | None = None,
) -> None:
    """After an evaluation as of ``context`` (``members``, its outcome): note
    in the profile when each trait, and the audiences, can next change with
    no new event.

    Each trait's next window edge is noted in ``profile["trait_due"]``; only
    those in ``moved`` (all where ``None``) are worked out again, since
    another's state has not changed and its noted time is later than now.
    The audiences are due at the first edge that can move one of them
    (:func:`edge_can_move`; every edge with ``every_edge``), when a
    ``days_since`` test flips (each timed audience's flip is noted,
    ``audience_flips``), or when the dwell's hold on a move of one ends. The
    audiences so held back are noted (``audiences_held``): only those
    ``evaluated`` (all where ``None``) can be, since a held-back audience is
    always evaluated again (:func:`evaluate_moved`).

    With no trait moved and no audience evaluated, every time noted holds:
    nothing that decides one has changed.
    """
    profile.pop("events_moved", None)
    if moved is not None and not moved and evaluated is not None and not evaluated:
        if "audience_flips" in profile:
            profile.pop("traits_moved", None)
            return
    states = profile.get("traits", {})
    now = context.now_ms
    shape = _shape(definitions)
    before = profile.get("trait_due") if moved is not None else None
    turned = profile.get("trait_turns")
    if before is not None and moved is not None and turned is not None:
        # An unchanged state has the same next edge and turn, and it still
        # can (or cannot) rise: a day still to enter has not entered, or it
        # would have moved. Only the moved traits are worked out again.
        due: list[int | None] = list(before)
        turns = list(turned)
        rising = set(profile.get("traits_rising") or ())
        again = [shape.trait_index[name] for name in moved]
    else:
        due = [None] * len(shape.traits)
        turns = [None] * len(shape.traits)
        rising = set()  # traits that can rise before the next event, by index
        again = list(range(len(shape.traits)))
    followers = shape.followers_at
    today = now // DAY_MS
    for n in again:
        trait = shape.traits[n]
        window = trait.window_days
        state = states.get(trait.fingerprint) if window is not None else None
        if not state or window is None:  # (next_edge's answer; a windowed count its own way)
            due[n], rises = None, False
        elif (held := state.get("k")) is not None:
            due[n], rises = count_edge(held, window, today)
        else:
            due[n], rises = next_edge(trait, state, now)
        if rises:
            rising.add(n)
        else:
            rising.discard(n)
        turns[n] = _UNKNOWN  # worked out below where it is needed
    first: int | None = None
    edge: int | None = None  # the first edge of any trait
    # The earliest turn that can move an audience (an edge or turn no earlier
    # than the earliest found so far is not looked at; a turn is never
    # before its trait's edge).
    either = shape.followed_either_way
    turns_at = None if every_edge else shape.turns_at
    for n, when in enumerate(due):
        if when is None:
            continue
        if edge is None or when < edge:
            edge = when
        if first is not None and when >= first:
            continue
        turn = turns[n]
        if turn is None or (first is not None and turn >= first):
            continue  # (the unknown, -1, is never)
        # edge_can_move, with its quick answers first
        if every_edge or (
            followers[n]
            and (either[n] or n in rising or edge_can_move(False, followers[n], members))
        ):
            if turn == _UNKNOWN:
                turn = turns[n] = when
                trait = shape.traits[n]
                state = states.get(trait.fingerprint)
                if turns_at is not None and state:
                    # Due where an answer can turn, not at an edge where none
                    # can (a decision there would find no move).
                    bounds = None if n in rising else turns_at[n]
                    if bounds is not None and "k" in state:
                        # A count that only falls: where it crosses a bound.
                        turn = turns[n] = next_turn(trait, state, now, bounds)
                    elif (spec := shape.bands_at[n]) is not None:
                        turn = turns[n] = next_band_change(trait, state, now, spec[0], spec[1])
                if turn is None or (first is not None and turn >= first):
                    continue
            first = turn
    profile["trait_turns"] = turns
    if rising:
        profile["traits_rising"] = sorted(rising)
    else:
        profile.pop("traits_rising", None)
    timed = shape.timed
    flips: list[int | None] | None = profile.get("audience_flips")
    if evaluated is None or flips is None or len(flips) != len(timed):
        again_timed: Iterable[int] = range(len(timed))
        flips = [None] * len(timed)
    else:
        # The others' flips hold: what decides them has not changed, or they
        # would have been evaluated.
        flips = list(flips)
        timed_index = shape.timed_index
        again_timed = [at for name in evaluated if (at := timed_index.get(name)) is not None]
    for n in again_timed:
        flips[n] = timed[n].next_change_ms(context, now)
    for moment in flips:
        if moment is not None and (first is None or moment < first):
            first = moment
    profile["audience_flips"] = flips
    held = profile.get("segments", {})
    held_back: list[str] = []
    dimensions = shape.dimensions
    for name in shape.audience_index if evaluated is None else evaluated:
        entry = held.get(dimensions[name])
        if entry is not None and "pending" in entry:
            held_back.append(name)
            applies = entry["pending"]["applies_ms"]  # the dwell's end: decided again
            if first is None or applies < first:
                first = applies
    profile["audiences_held"] = held_back
    profile["trait_due"] = due
    profile["trait_edge_ms"] = edge
    profile["audiences_due_ms"] = first
    profile["audiences_digest"] = definitions.digest
    profile.pop("traits_moved", None)
