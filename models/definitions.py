"""User-defined computed traits and audiences, read from a YAML definitions file.

A marketer describes *traits* — per-customer aggregates over their events,
such as "orders in the last 30 days" — and *audiences* — conditions over
traits, built-in metrics, model scores and segment values — in one file. This
module reads and checks that file once, compiles every audience condition
into Python closures, and gives the streaming worker pure functions to keep
each trait's per-customer state and to evaluate the audiences. It imports
nothing from the streaming layer, so the worker and the offline tools call
the same functions. The file format is described in
``docs/definitions-file.md``.

Nothing a user writes is handed to ``eval``: conditions go through the
tokenizer and recursive-descent parser below, and every name in them is
checked against the file (traits, audiences) or against the names the caller
knows (metrics, scores, segment dimensions) before anything runs.

Examples
--------
>>> defs = load_definitions('''
... version: 1
... traits:
...   orders_30d: {aggregate: count, topic: purchases, type: order, window_days: 30}
... audiences:
...   repeat_buyers:
...     when: "orders_30d >= 2"
... ''')
>>> trait = defs.traits["orders_30d"]
>>> state = None
>>> for ts in (0, 3_600_000):
...     state = trait.fold(state, {"topic": "purchases", "type": "order", "ts": ts})
>>> trait.value(state, as_of_ms=DAY_MS)
2
>>> traits = trait_values(defs, {"orders_30d": state}, as_of_ms=DAY_MS)
>>> evaluate_audiences(defs, Context(now_ms=DAY_MS, traits=traits))
{'repeat_buyers': True}
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeVar

import yaml  # type: ignore[import-untyped]  # PyYAML ships no annotations

from models.profile import DAY_MS
from schemas.errors import ConfigError, SegstreamError

MAX_TRAITS: Final = 100
MAX_AUDIENCES: Final = 100
MAX_PREDICATES: Final = 20
MAX_EXPRESSION_CHARS: Final = 2_000
MAX_EXPRESSION_NODES: Final = 200
MAX_EXPRESSION_DEPTH: Final = 32
MAX_DISTINCT_VALUES: Final = 256
MAX_WINDOW_DAYS: Final = 730

Aggregate: TypeAlias = Literal["count", "sum", "avg", "min", "max", "latest", "distinct_count"]
Topic: TypeAlias = Literal["clickstream", "purchases", "support"]
PredicateOp: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "exists"]

AGGREGATES: Final[tuple[Aggregate, ...]] = (
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "latest",
    "distinct_count",
)
TOPICS: Final[tuple[Topic, ...]] = ("clickstream", "purchases", "support")
PREDICATE_OPS: Final[tuple[PredicateOp, ...]] = (
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not_in",
    "exists",
)

TraitState: TypeAlias = dict[str, Any]
"""A trait's per-customer state: JSON-serialisable, bounded (see :meth:`Trait.fold`)."""

TraitValue: TypeAlias = float | int | str | None

NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
NAMESPACES: Final = ("trait", "metric", "score", "segment", "audience")
FUNCTIONS: Final = ("days_since",)
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
# A trait or audience may not take a name the expression language gives
# another meaning: a trait called ``and`` could never be read back.
RESERVED_NAMES: Final = _KEYWORDS | frozenset(NAMESPACES) | frozenset(FUNCTIONS)

_ORDERING: Final[dict[str, Callable[[Any, Any], Any]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_COMPARISONS: Final = ("==", "!=", ">", ">=", "<", "<=")


class DefinitionsError(ConfigError):
    """The definitions file cannot be used: where, what was expected, what was found.

    Parameters
    ----------
    source
        The file's name as the message shows it.
    line
        1-based line of the offending YAML node, or ``None`` when the problem
        is not in the file's text (e.g. the file is missing).
    field
        Dotted path of the offending field (``audiences.vip_at_risk.when``),
        or ``""`` for the file as a whole.
    expected
        What would have been accepted there.
    got
        What was found instead.
    column
        1-based position inside a ``when`` expression, for errors in one.

    Examples
    --------
    >>> str(DefinitionsError("definitions.yaml", 12, "audiences.a.when", "a comparison", "'x'"))
    "definitions.yaml line 12, audiences.a.when: expected a comparison, got 'x'"
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        field: str,
        expected: str,
        got: str,
        column: int | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        self.column = column
        where = source if line is None else f"{source} line {line}"
        if field:
            where += f", {field}"
        if column is not None:
            where += f" (column {column})"
        super().__init__(f"{where}: expected {expected}, got {got}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call __init__ with the message alone.
        args = (self.source, self.line, self.field, self.expected, self.got, self.column)
        return (type(self), args)


# --------------------------------------------------------------------------
# Values shared by predicates and expressions
# --------------------------------------------------------------------------


_NUMBER_TYPES: Final = (int, float)


def _is_number(value: object) -> bool:
    # bool is an int to Python but never a number to a marketer.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: object, right: object) -> bool:
    """Equality without Python's ``True == 1``; ``1 == 1.0`` still holds."""
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def _ordered(op: str, left: object, right: object) -> bool:
    """An ordering comparison; false for null and for values of different kinds."""
    if (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    ):
        return bool(_ORDERING[op](left, right))
    return False


def _compare(op: str, left: object, right: object) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    return _ordered(op, left, right)


def _member(item: object, container: object) -> bool:
    if isinstance(container, list | tuple | set | frozenset):
        return any(_equal(item, element) for element in container)
    return False


def lookup(event: Mapping[str, Any], name: str) -> Any:
    """A property of a decoded event: top level first, then its ``properties``.

    Custom events carry their properties in a nested ``properties`` dict;
    a top-level key that is absent or null falls through to it.

    >>> lookup({"amount": 5, "properties": {"plan": "pro"}}, "plan")
    'pro'
    >>> lookup({"amount": None, "properties": {"amount": 7}}, "amount")
    7
    >>> lookup({"ts": 1}, "plan") is None
    True
    """
    value = event.get(name)
    if value is None:
        properties = event.get("properties")
        if isinstance(properties, Mapping):
            value = properties.get(name)
    return value


# --------------------------------------------------------------------------
# Traits
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Predicate:
    """One ``where`` condition on an event's property.

    ``!=`` and ``not_in`` are the exact opposites of ``==`` and ``in``, so
    they hold for an event that lacks the property; the ordering operators
    never do.

    >>> Predicate("amount", ">=", 20).holds({"amount": 25})
    True
    >>> Predicate("amount", ">=", 20).holds({})
    False
    >>> Predicate("channel", "not_in", ("store",)).holds({})
    True
    """

    property: str
    op: PredicateOp
    value: Any = None

    def holds(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` satisfies this predicate."""
        actual = lookup(event, self.property)
        if self.op == "exists":
            return actual is not None
        if self.op == "in":
            return _member(actual, self.value)
        if self.op == "not_in":
            return not _member(actual, self.value)
        return _compare(self.op, actual, self.value)


def _event_ts(event: Mapping[str, Any]) -> int:
    ts = event.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise SegstreamError(f"a trait can only fold an event with an integer 'ts', got {ts!r}")
    return ts


def _merge(aggregate: list[Any] | None, amount: float) -> list[Any]:
    """``[count, sum, min, max]`` with one more value folded in (a windowed
    count keeps only the count, :meth:`Trait.fold`)."""
    if not aggregate or aggregate[0] == 0:
        return [1, amount, amount, amount]
    count, total, low, high = aggregate
    return [count + 1, total + amount, min(low, amount), max(high, amount)]


def ordered_days(days: Mapping[str, Any]) -> dict[str, Any]:
    """``days`` (a windowed state's ``"d"``) with its days in ascending order,
    the order every windowed state keeps.

    >>> ordered_days({"12": 1, "9": 2})
    {'9': 2, '12': 1}
    """
    return dict(sorted(days.items(), key=lambda item: int(item[0])))


def _window_parts(days: dict[str, Any], start: int, end: int) -> Iterable[Any]:
    """The aggregates of the held ``days`` (ascending) from day ``start`` to
    day ``end``: all of them, with no day read, when the window spans them."""
    if not days or (start <= int(next(iter(days))) and int(next(reversed(days))) <= end):
        return days.values()
    parts = []
    for key, agg in days.items():
        day = int(key)
        if day > end:
            break
        if day >= start:
            parts.append(agg)
    return parts


def count_lists(days: Mapping[str, Any]) -> TraitState:
    """A windowed count's state from its days as earlier layouts kept them,
    ``{"<day>": n}`` (or ``[n, 0, 0, 0]``), in any order.

    >>> count_lists({"12": 1, "9": [2, 0, 0, 0]})
    {'k': [9, 12], 'n': [2, 1]}
    """
    ordered = sorted(
        (int(day), agg[0] if isinstance(agg, list) else agg) for day, agg in days.items()
    )
    return {"k": [day for day, _ in ordered], "n": [n for _, n in ordered]}


def window_count(days: list[int], counts: list[int], start: int, end: int) -> int:
    """The events a windowed count holds from day ``start`` to day ``end``."""
    if not days:
        return 0
    if start <= days[0] and days[-1] <= end:
        return sum(counts)
    return sum(counts[bisect_left(days, start) : bisect_right(days, end)])


def count_edge(days: list[int], window: int, after_day: int) -> tuple[int | None, bool]:
    """Of a windowed count holding events on ``days`` (ascending): the next
    time after day ``after_day`` that a day enters or leaves its window
    (``None``: none is left), and whether a day after ``after_day`` is held.

    The first day still in the window leaves first, and the first day after
    ``after_day`` enters first: two binary searches.

    >>> [count_edge([3, 5, 12], 7, day) for day in (4, 9, 12)] == [
    ...     (5 * DAY_MS, True), (10 * DAY_MS, True), (19 * DAY_MS, False)]
    True
    """
    later = bool(days) and days[-1] > after_day
    at = bisect_right(days, after_day - window)  # days up to that one have left
    if at == len(days):
        return None, later
    leaves = days[at]
    if leaves <= after_day:
        leaves += window  # it leaves; a day still to enter may come sooner
        at = bisect_right(days, after_day)
        if at < len(days) and days[at] < leaves:
            leaves = days[at]
    return leaves * DAY_MS, later


# The day a distinct count's kept entry ``[value, day]`` was last seen.
SEEN_DAY: Final = operator.itemgetter(1)


def _distinct_value(value: Any) -> bool | int | float | str | None:
    """The value a distinct count keeps, or None when it cannot be counted."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        # 3 and 3.0 are one value, and stay one after a JSON round trip.
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return None


def _entry_of(kept: Sequence[Any], value: Any) -> int:
    """The place of ``value``'s ``[value, last_day]`` entry in a windowed
    distinct count's kept values, or -1. A kept value's type and equality
    are its :func:`_distinct_key` (``value`` is :func:`_distinct_value`'s):
    3 is never taken for 3.0, nor True for 1.

    >>> _entry_of([["toys", 3], [1, 4]], 1), _entry_of([[1, 4]], True)
    (1, -1)
    """
    kind = type(value)
    for n, entry in enumerate(kept):
        if type(entry[0]) is kind and entry[0] == value:
            return n
    return -1


def _distinct_key(value: Any) -> tuple[str, str]:
    """Identity and tie-break order of a kept distinct value (``"3"`` is not ``3``)."""
    if isinstance(value, bool):
        return ("b", repr(value))
    if isinstance(value, str):
        return ("s", value)
    return ("n", repr(value))


@dataclass(frozen=True, slots=True)
class Trait:
    """A per-customer aggregate over the events that match it.

    Built by :func:`load_definitions`. The state it keeps per customer is a
    plain JSON-serialisable dict, bounded whatever the event volume:

    - windowed ``sum``/``avg``/``min``/``max``: one ``[count, sum, min,
      max]`` per UTC day, ``{"d": {"<day>": [...]}}`` in ascending day
      order, keeping only the ``window_days`` days up to the newest one
      folded;
    - a windowed ``count``: the days with an event and each one's count, in
      two lists in ascending day order, ``{"k": [day, ...], "n": [n, ...]}``
      (the same days kept);
    - the same over the lifetime: one aggregate, ``{"a": [...]}``;
    - ``latest``: ``{"l": [ts, value]}``;
    - ``distinct_count``: ``{"v": [value, ...]}`` over the lifetime, or
      ``{"v": [[value, last_day], ...]}`` in a window, at most
      :data:`MAX_DISTINCT_VALUES` values.

    Attributes
    ----------
    name
        The trait's name in the file, and in conditions.
    aggregate
        What is taken of the matching events, one of :data:`AGGREGATES`.
    topic, type
        The events it reads: their topic, and their ``type`` if given.
    property
        The event property the aggregate is taken of (``None`` for ``count``,
        and for ``latest`` of the event time).
    where
        Predicates every matching event satisfies.
    window_days
        The window in whole UTC days, or ``None`` for the lifetime.
    description, line
        The optional description and the line the trait's name is on.
    fingerprint
        Short hash of everything that gives the state its meaning
        (aggregate, topic, type, property, predicates, window). When it
        changes between two versions of the file, states kept under the old
        one no longer answer for the new trait.
    """

    name: str
    aggregate: Aggregate
    topic: Topic
    type: str | None = None
    property: str | None = None
    where: tuple[Predicate, ...] = ()
    window_days: int | None = None
    description: str | None = None
    line: int = 0
    fingerprint: str = field(init=False, default="")

    def __post_init__(self) -> None:
        meaning = [
            self.aggregate,
            self.topic,
            self.type,
            self.property,
            [
                [p.property, p.op, list(p.value) if isinstance(p.value, tuple) else p.value]
                for p in self.where
            ],
            self.window_days,
        ]
        digest = hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()
        object.__setattr__(self, "fingerprint", digest[:16])

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` counts for this trait: topic, type and every predicate.

        ``event`` is a decoded event: ``topic``, ``type``, ``ts`` (epoch ms)
        and its properties at top level or under ``properties``. An event
        without an integer ``ts`` never matches.

        >>> t = Trait("big", "count", "purchases", "order", where=(Predicate("amount", ">", 9),))
        >>> t.matches({"topic": "purchases", "type": "order", "ts": 0, "amount": 10})
        True
        >>> t.matches({"topic": "purchases", "type": "refund", "ts": 0, "amount": 10})
        False
        """
        if event.get("topic") != self.topic:
            return False
        if self.type is not None and event.get("type") != self.type:
            return False
        ts = event.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            return False
        return self.where_holds(event)

    def where_holds(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` satisfies every predicate (of :meth:`matches`, the
        part after topic, type and time)."""
        for predicate in self.where:
            if not predicate.holds(event):
                return False
        return True

    def fold(self, state: TraitState | None, event: Mapping[str, Any]) -> TraitState:
        """Return ``state`` with one matching event folded in; ``state`` is not changed.

        Call it only for events :meth:`matches` accepts. Events may come
        late and in any order: ``count``, ``sum``, ``min``, ``max`` and
        ``distinct_count`` come to the same value whatever the order
        (``sum`` of floats up to rounding). A windowed trait ignores an event
        whose day is already out of the window of the newest day it holds.
        ``latest`` keeps the value of the greatest ``ts``, the later fold on
        a tie. An event whose property is missing or unusable (not a finite
        number for ``sum``/``avg``/``min``/``max``; not a string, number or
        boolean for ``latest``/``distinct_count``) leaves the value as it was.

        >>> t = Trait("spend", "sum", "purchases", "order", property="amount", window_days=7)
        >>> s = t.fold(None, {"ts": 0, "amount": 5})
        >>> s = t.fold(s, {"ts": 8 * DAY_MS, "amount": 2})
        >>> s
        {'d': {'8': [1, 2, 2, 2]}}
        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> t.fold(t.fold(None, {"ts": 0}), {"ts": 5})
        {'k': [0], 'n': [2]}
        """
        ts = _event_ts(event)
        if self.aggregate == "latest":
            return self._fold_latest(state, ts, event)
        if self.aggregate == "distinct_count":
            return self._fold_distinct(state, ts, event)
        amount: Any = 0
        if self.property is not None:
            amount = lookup(event, self.property)
            if not _is_number(amount) or not math.isfinite(amount):
                return state if state is not None else self._empty()
        if self.window_days is None:
            return {"a": _merge(state["a"] if state else None, amount)}
        if self.aggregate == "count":
            return self.fold_count(state, ts // DAY_MS, in_place=False)
        day, key = ts // DAY_MS, str(ts // DAY_MS)
        held: dict[str, Any] = state["d"] if state else {}
        newest = int(next(reversed(held))) if held else day  # the days are in order
        if day <= newest - self.window_days:
            return state if state is not None else self._empty()
        merged: Any = _merge(held.get(key), amount)
        if day > newest:  # a new newest day, last; the days it pushes out dropped
            days = {k: v for k, v in held.items() if int(k) > day - self.window_days}
            days[key] = merged
        elif key in held:
            days = {**held, key: merged}
        else:  # an earlier day not held: into its place
            days = ordered_days({**held, key: merged})
        return {"d": days}

    def fold_into(self, state: TraitState | None, event: Mapping[str, Any]) -> TraitState:
        """:meth:`fold`, but ``state`` (the caller's own) may be changed in place.

        The common case, another event on a day a windowed trait already
        holds, then costs one merge instead of a copy of every day.

        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> s = t.fold(None, {"ts": 5})
        >>> t.fold_into(s, {"ts": 9}) is s, s
        (True, {'k': [0], 'n': [2]})
        """
        if state is None:
            return self.fold(state, event)
        if "k" in state:
            return self.fold_count(state, _event_ts(event) // DAY_MS, in_place=True)
        if "d" not in state:
            if self.aggregate == "distinct_count":
                return self._fold_distinct(state, _event_ts(event), event, in_place=True)
            return self.fold(state, event)
        amount: Any = 0
        if self.property is not None:
            amount = lookup(event, self.property)
            if not _is_number(amount) or not math.isfinite(amount):
                return state
        if self.aggregate == "count":  # kept by an earlier layout
            return self.fold_count(state, _event_ts(event) // DAY_MS, in_place=True)
        days: dict[str, Any] = state["d"]
        day = _event_ts(event) // DAY_MS
        key = str(day)
        held = days.get(key)
        if held is not None:
            days[key] = _merge(held, amount)
            return state
        # A day not held: it may move the window, as in fold().
        window = self.window_days
        assert window is not None  # noqa: S101 - only windowed states hold "d"
        if not days:
            days[key] = _merge(None, amount)
            return state
        newest = int(next(reversed(days)))  # the days are in order
        if day <= newest - window:
            return state
        days[key] = _merge(None, amount)  # last
        if day > newest:
            # The days it pushes out of the window are the first ones.
            leaving = []
            for old in days:
                if int(old) > day - window:
                    break
                leaving.append(old)
            for old in leaving:
                del days[old]
        else:  # an earlier day: into its place
            ordered = ordered_days(days)
            days.clear()
            days.update(ordered)
        return state

    def _empty(self) -> TraitState:
        if self.aggregate == "latest":
            return {}
        if self.aggregate == "distinct_count":
            return {"v": []}
        if self.window_days is None:
            return {"a": [0, 0, 0, 0]}
        if self.aggregate == "count":
            return {"k": [], "n": []}
        return {"d": {}}

    def fold_count(self, state: TraitState | None, day: int, in_place: bool) -> TraitState:
        """``fold`` of a windowed count: one more event on ``day``; ``in_place``:
        ``state`` (not ``None``) is changed rather than copied.

        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> s = {"k": [3, 5], "n": [1, 2]}
        >>> t.fold_count(s, 11, in_place=True) is s, s  # day 3 leaves the window
        (True, {'k': [5, 11], 'n': [2, 1]})
        """
        window = self.window_days
        assert window is not None  # noqa: S101 - windowed counts only
        if not state:
            return {"k": [day], "n": [1]}
        if "k" not in state:  # kept by an earlier layout
            state = count_lists(state.get("d", {}))
            in_place = True
        days: list[int] = state["k"]
        counts: list[int] = state["n"]
        if not days:
            if not in_place:
                return {"k": [day], "n": [1]}
            days.append(day)
            counts.append(1)
            return state
        newest = days[-1]
        if day <= newest - window:
            return state
        if not in_place:
            days, counts = list(days), list(counts)
            state = {"k": days, "n": counts}
        if day == newest:
            counts[-1] += 1
        elif day > newest:
            days.append(day)
            counts.append(1)
            # The days it pushes out of the window are the first ones.
            gone = bisect_right(days, day - window)
            if gone:
                del days[:gone], counts[:gone]
        else:  # an earlier day: into its place
            at = bisect_left(days, day)
            if days[at] == day:
                counts[at] += 1
            else:
                days.insert(at, day)
                counts.insert(at, 1)
        return state

    def _fold_latest(
        self, state: TraitState | None, ts: int, event: Mapping[str, Any]
    ) -> TraitState:
        value: Any = ts
        if self.property is not None:
            value = lookup(event, self.property)
            if not isinstance(value, str | int | float) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                return state if state is not None else self._empty()
        current = state.get("l") if state else None
        if current is None or ts >= current[0]:
            return {"l": [ts, value]}
        return state if state is not None else self._empty()

    def fold_distinct_into(self, state: TraitState, event: Mapping[str, Any]) -> bool:
        """:meth:`fold_into` of a windowed distinct count with a state: the
        state is changed in place; whether it changed. It does not where the
        state already holds the event's value, last seen on the event's day
        or later (the commonest case, a category viewed again that day), nor
        where the event's day is already out of the window of the newest day
        held.

        >>> t = Trait("categories_30d", "distinct_count", "clickstream", "product_view",
        ...           property="category", window_days=30)
        >>> s = t.fold(None, {"ts": 2 * DAY_MS, "category": "toys"})
        >>> [t.fold_distinct_into(s, {"ts": d * DAY_MS, "category": c})
        ...  for d, c in ((2, "toys"), (1, "toys"), (3, "toys"), (2, "books"), (-30, "games"))]
        [False, False, True, True, False]
        >>> s
        {'v': [['toys', 3], ['books', 2]]}
        """
        value = _distinct_value(lookup(event, self.property)) if self.property else None
        if value is None:
            return False
        entries = self._windowed_entries(state["v"], value, _event_ts(event) // DAY_MS, True)
        if entries is None:
            return False
        state["v"] = entries
        return True

    def _fold_distinct(
        self, state: TraitState | None, ts: int, event: Mapping[str, Any], in_place: bool = False
    ) -> TraitState:
        """``fold`` of a distinct count; ``in_place``: ``state`` (not ``None``)
        is changed rather than copied."""
        unchanged = state if state is not None else self._empty()
        if self.property is None:  # the loader never builds one without
            return unchanged
        value = _distinct_value(lookup(event, self.property))
        if value is None:
            return unchanged
        kept: list[Any] = state["v"] if state else []
        # A kept value's type and equality are its _distinct_key: the values
        # are _distinct_value's, so 3 is never kept as 3.0, nor True as 1.
        kind = type(value)
        if self.window_days is None:
            # Over the lifetime the first values seen are kept: the count is
            # min(distinct values, the bound) whatever the order.
            if len(kept) >= MAX_DISTINCT_VALUES or any(
                type(v) is kind and v == value for v in kept
            ):
                return unchanged
            if in_place and state is not None:
                kept.append(value)
                return state
            return {"v": [*kept, value]}
        entries = self._windowed_entries(kept, value, ts // DAY_MS, in_place and state is not None)
        if entries is None:
            return unchanged
        if in_place and state is not None:
            state["v"] = entries
            return state
        return {"v": entries}

    def _windowed_entries(
        self, kept: list[Any], value: Any, day: int, in_place: bool
    ) -> list[Any] | None:
        """A windowed distinct count's ``[value, last_day]`` entries with
        ``value`` seen on ``day`` (``kept`` itself changed where
        ``in_place``), or ``None`` where they hold as they are."""
        window = self.window_days
        assert window is not None  # noqa: S101 - windowed distinct counts only
        at = _entry_of(kept, value)
        if at >= 0 and day <= kept[at][1]:
            # Seen again on a day no later than it was last seen: the state
            # holds (the commonest case, a category viewed again).
            return None
        # The newest and oldest days kept.
        newest = max(kept, key=SEEN_DAY)[1] if kept else day
        if day <= newest - window:
            return None
        oldest = min(kept, key=SEEN_DAY)[1] if kept else day
        entries = kept if in_place else [list(entry) for entry in kept]
        if at >= 0:
            entries[at][1] = day
        else:
            entries.append([value, day])
        newest = max(newest, day)
        if min(oldest, day) <= newest - window:
            entries = [entry for entry in entries if entry[1] > newest - window]
        if len(entries) > MAX_DISTINCT_VALUES:
            # Keep the most recently seen values (ties by value, so the
            # outcome does not depend on the order events came in).
            entries.remove(min(entries, key=lambda e: (e[1], *_distinct_key(e[0]))))
        return entries

    def reader(self) -> Callable[[TraitState | None, int], TraitValue]:
        """:meth:`value`, as a function of the state and the moment; for a
        windowed count, the commonest trait, one that reads the two lists
        at once.

        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> read, s = t.reader(), {"k": [0, 3], "n": [1, 2]}
        >>> [(read(s, day * DAY_MS), t.value(s, day * DAY_MS)) for day in (3, 7, 10)]
        [(3, 3), (2, 2), (0, 0)]
        """
        window = self.window_days
        if window is None or self.aggregate != "count":
            return self.value
        value = self.value

        def count(state: TraitState | None, as_of_ms: int) -> TraitValue:
            if not state:
                return 0
            days = state.get("k")
            if days is None:  # kept by an earlier layout
                return value(state, as_of_ms)
            end = as_of_ms // DAY_MS
            return window_count(days, state["n"], end - window + 1, end)

        return count

    def value(self, state: TraitState | None, as_of_ms: int) -> TraitValue:
        """The trait's value as of ``as_of_ms``.

        A windowed trait counts the UTC days from ``as_of_day - window_days
        + 1`` to ``as_of_day`` (``day = ts // 86_400_000``); events on later
        days do not count yet. A lifetime trait counts everything folded.
        ``count``, ``sum`` and ``distinct_count`` of nothing are 0;
        ``avg``, ``min``, ``max`` and ``latest`` of nothing are ``None``.

        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> s = t.fold(None, {"ts": 0})
        >>> t.value(s, as_of_ms=6 * DAY_MS), t.value(s, as_of_ms=7 * DAY_MS)
        (1, 0)
        """
        window = self.window_days
        end = as_of_ms // DAY_MS
        if window is not None and self.aggregate == "count":
            # The commonest trait: a count per day.
            if not state:
                return 0
            if "k" not in state:  # kept by an earlier layout
                state = count_lists(state.get("d", {}))
            return window_count(state["k"], state["n"], end - window + 1, end)
        start = end - window + 1 if window is not None else None
        if start is None and state and "a" in state:
            # A lifetime count, sum, avg, min or max: its one aggregate (as below).
            whole: list[Any] = state["a"]
            events: int = whole[0]
            if events <= 0:
                return 0 if self.aggregate in ("count", "sum") else None
            aggregate = self.aggregate
            if aggregate == "count":
                return 0 + events
            amounts: float = 0 + whole[1]
            if aggregate == "sum":
                return amounts
            if aggregate == "avg":
                return amounts / events
            bound: float = whole[2] if aggregate == "min" else whole[3]
            return bound
        if start is not None and state and self.aggregate == "sum":
            # The common case, in one pass (the same sums as below).
            added = 0
            for agg in _window_parts(state["d"], start, end):
                if agg[0] > 0:
                    added += agg[1]
            return added
        if self.aggregate == "latest":
            latest = state.get("l") if state else None
            if latest is None:
                return None
            if start is not None and not start <= latest[0] // DAY_MS <= end:
                return None
            latest_value: TraitValue = latest[1]
            return latest_value
        if self.aggregate == "distinct_count":
            kept: list[Any] = state["v"] if state else []
            if start is None:
                return len(kept)
            seen = 0
            for entry in kept:
                if start <= entry[1] <= end:
                    seen += 1
            return seen
        if not state:
            parts: list[list[Any]] = []
        elif start is None:
            parts = [state["a"]]
        else:
            parts = list(_window_parts(state["d"], start, end))
        parts = [agg for agg in parts if agg[0] > 0]
        count: int = sum(agg[0] for agg in parts)
        if self.aggregate == "count":
            return count
        total: float = sum(agg[1] for agg in parts)
        if self.aggregate == "sum":
            return total
        if not parts:
            return None
        if self.aggregate == "avg":
            return total / count
        extreme: float = (
            min(agg[2] for agg in parts)
            if self.aggregate == "min"
            else max(agg[3] for agg in parts)
        )
        return extreme

    def next_change_ms(self, state: TraitState | None, after_ms: int) -> int | None:
        """The earliest time after ``after_ms`` at which :meth:`value` can change by itself.

        That is when a day of the state leaves the window (or, for a day
        after ``after_ms``, enters it). The value may turn out the same then
        (a ``max`` another day also reached). ``None`` for lifetime traits and
        empty states.

        >>> t = Trait("orders_7d", "count", "purchases", "order", window_days=7)
        >>> t.next_change_ms(t.fold(None, {"ts": 5}), after_ms=5) == 7 * DAY_MS
        True
        """
        window = self.window_days
        if window is None or not state:
            return None
        # In whole days: day d enters at d and leaves at d + window (midnights);
        # a midnight m is after after_ms exactly when m > after_ms // DAY_MS.
        after_day = after_ms // DAY_MS
        first: int | None = None
        if "d" in state or "k" in state:  # the common case: windowed count, sum, avg...
            return self.scan_days(state, after_ms)[0]
        for day in self._days(state):
            moment = day if day > after_day else day + window
            if moment > after_day and (first is None or moment < first):
                first = moment
        return None if first is None else first * DAY_MS

    def scan_days(self, state: TraitState, after_ms: int) -> tuple[int | None, bool, bool]:
        """From the days a windowed count, sum, avg, min or max holds
        (in order): the next time after ``after_ms`` a day
        enters or leaves the window (:meth:`next_change_ms`), whether a day
        after ``after_ms``'s day is held, and (for a ``sum``) whether a day
        holds a negative amount.

        The first day still in the window leaves first, and the first day
        after ``after_ms``'s enters first: only the ends of the days are
        read, except for the sign of a sum's amounts.

        >>> t = Trait("spend_7d", "sum", "purchases", "order", property="amount", window_days=7)
        >>> s = t.fold(t.fold(None, {"ts": 0, "amount": 5}), {"ts": 2 * DAY_MS, "amount": -1})
        >>> t.scan_days(s, after_ms=DAY_MS) == (2 * DAY_MS, True, True)
        True
        """
        window = self.window_days
        assert window is not None  # noqa: S101 - only windowed states hold "d"
        after_day = after_ms // DAY_MS
        gone = after_day - window  # days up to this one have left the window
        if "k" in state:  # a windowed count
            held: list[int] = state["k"]
            when, later = count_edge(held, window, after_day)
            return when, later, False
        days: dict[str, Any] = state["d"]
        # Every day a count holds counted an event; a day of another aggregate
        # counts its events first.
        counting = self.aggregate == "count"
        first: int | None = None
        for key, agg in days.items():
            if (counting or agg[0] > 0) and int(key) > gone:
                first = int(key)
                break
        if first is not None and first <= after_day:
            first += window  # it leaves; a day still to enter may come sooner
            for key in reversed(days):
                day = int(key)
                if day <= after_day:
                    break
                if (counting or days[key][0] > 0) and day < first:
                    first = day
        later = bool(days) and int(next(reversed(days))) > after_day
        negative = self.aggregate == "sum" and any(agg[1] < 0 for agg in days.values())
        return None if first is None else first * DAY_MS, later, negative

    def _days(self, state: TraitState) -> Iterator[int]:
        if self.aggregate == "latest":
            if "l" in state:
                yield state["l"][0] // DAY_MS
        elif self.aggregate == "distinct_count":
            yield from (day for _, day in state["v"])
        elif "k" in state:
            yield from state["k"]
        else:
            counting = self.aggregate == "count"  # (kept by an earlier layout)
            yield from (int(day) for day, agg in state["d"].items() if counting or agg[0] > 0)


# --------------------------------------------------------------------------
# The expression language of ``when``
# --------------------------------------------------------------------------

# Static kinds the parser tracks to reject comparisons that can never hold.
_NUMBER, _STRING, _BOOLEAN, _NULL, _LIST, _ANY = (
    "number",
    "string",
    "boolean",
    "null",
    "list",
    "any",
)
_KIND_NAMES: Final = {
    _NUMBER: "a number",
    _STRING: "a string",
    _BOOLEAN: "true/false",
    _NULL: "null",
    _LIST: "a list",
    _ANY: "a value",
}
_PLURALS: Final = {_NUMBER: "numbers", _STRING: "strings", _BOOLEAN: "true/false", _NULL: "null"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["number", "string", "name", "keyword", "symbol", "end", "error"]
    text: str
    pos: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class _ListLiteral:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Ref:
    namespace: str
    name: str
    text: str  # as written: ``revenue_90d`` or ``trait.revenue_90d``


@dataclass(frozen=True, slots=True)
class _DaysSince:
    ref: _Ref


@dataclass(frozen=True, slots=True)
class _Comparison:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Membership:
    negated: bool
    item: _Node
    container: _Node


@dataclass(frozen=True, slots=True)
class _Logic:
    op: Literal["and", "or"]
    parts: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


_Node: TypeAlias = (
    "_Literal | _ListLiteral | _Ref | _DaysSince | _Comparison | _Membership | _Logic | _Not"
)
_Evaluator: TypeAlias = Callable[["Context"], Any]
_NodeT = TypeVar("_NodeT")

_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<symbol>==|!=|>=|<=|[<>()\[\],-])"
    r"|(?P<quote>[\"'])"
)
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


class _ExpressionError(Exception):
    """Raised inside the parser; turned into a :class:`DefinitionsError` with the line."""

    def __init__(self, pos: int, expected: str, got: str) -> None:
        super().__init__(expected)
        self.pos = pos
        self.expected = expected
        self.got = got


def _shown(token: _Token) -> str:
    return "end of expression" if token.kind == "end" else f"'{token.text}'"


def _tokenize(source: str) -> list[_Token]:
    """The tokens of ``source``, ending in an ``end`` or an ``error`` token.

    An ``error`` token stands where the text stops making tokens; the parser
    raises it only when it gets there, so an earlier mistake is the one
    reported.
    """
    tokens: list[_Token] = []
    pos = 0
    try:
        while pos < len(source):
            token, pos = _next_token(source, pos)
            if token is not None:
                tokens.append(token)
    except _ExpressionError as exc:
        tokens.append(_Token("error", "", exc.pos, exc))
        return tokens
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _next_token(source: str, pos: int) -> tuple[_Token | None, int]:
    """The token at ``pos`` (``None`` for white space) and where the next one starts."""
    match = _TOKEN.match(source, pos)
    if match is None:
        char = source[pos]
        if char == "=":
            raise _ExpressionError(pos, "'==' to test equality", "'='")
        if char in "&|":
            raise _ExpressionError(pos, "'and' or 'or'", f"'{char}'")
        raise _ExpressionError(pos, "a name, a value, an operator or a parenthesis", f"'{char}'")
    kind, text, end = match.lastgroup, match.group(), match.end()
    if kind == "space":
        return None, end
    if kind == "quote":
        string = _read_string(source, pos)
        return string, pos + len(string.text)
    if kind == "number":
        number: float = float(text) if any(c in text for c in ".eE") else int(text)
        if not math.isfinite(number):
            raise _ExpressionError(pos, "a finite number", f"'{text}'")
        return _Token("number", text, pos, number), end
    if kind == "name":
        return _Token("keyword" if text in _KEYWORDS else "name", text, pos), end
    return _Token("symbol", text, pos), end


def _read_string(source: str, start: int) -> _Token:
    quote = source[start]
    chars: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == quote:
            return _Token("string", source[start : pos + 1], start, "".join(chars))
        if char == "\\":
            escaped = source[pos + 1 : pos + 2]
            if escaped not in _ESCAPES:
                raise _ExpressionError(
                    pos, "an escape among \\\\ \\\" \\' \\n \\t", f"'\\{escaped}'"
                )
            chars.append(_ESCAPES[escaped])
            pos += 2
            continue
        chars.append(char)
        pos += 1
    raise _ExpressionError(start, f"a closing {quote} for this string", "end of expression")


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _labelled(node: _Node, kind: str) -> str:
    """``a number (orders_30d)``: the kind of a value, and what gave it."""
    if isinstance(node, _Literal) and kind != _NULL:
        return f"{_KIND_NAMES[kind]} ({node.text})"
    if isinstance(node, _Ref):
        return f"{_KIND_NAMES[kind]} ({node.text})"
    if isinstance(node, _DaysSince):
        return f"{_KIND_NAMES[kind]} (days_since({node.ref.text}))"
    return _KIND_NAMES[kind]


def _describe(node: _Node) -> str:
    if isinstance(node, _Ref):
        return f"'{node.text}'"
    if isinstance(node, _Literal):
        return node.text
    if isinstance(node, _DaysSince):
        return f"'days_since({node.ref.text})'"
    if isinstance(node, _ListLiteral):
        return "a list"
    return "a condition"


@dataclass(frozen=True, slots=True)
class _Scope:
    """What names an expression may read, and what kind of value each gives."""

    traits: Mapping[str, str]  # trait name -> static kind
    earlier_audiences: frozenset[str]
    later_audiences: Mapping[str, int]  # name -> line, for a precise error
    this_audience: str
    known: Mapping[str, frozenset[str] | None]  # metric/score/segment -> names or any


class _Parser:
    """Recursive descent over the tokens of one ``when`` expression.

    Grammar, loosest binding first::

        expression := conjunction ("or" conjunction)*
        conjunction := negation ("and" negation)*
        negation   := "not" negation | comparison
        comparison := operand [(== | != | > | >= | < | <=) operand
                               | "in" operand | "not" "in" operand]
        operand    := number | string | true | false | null | list
                      | name | days_since "(" name ")" | "(" expression ")"
    """

    def __init__(self, source: str, scope: _Scope) -> None:
        self.tokens = _tokenize(source)
        self.index = 0
        self.scope = scope
        self.nodes = 0
        self.depth = 0

    def parse(self) -> _Node:
        node, _ = self.expression("a comparison", None)
        token = self.peek()
        if token.kind != "end":
            raise _ExpressionError(token.pos, "'and', 'or' or end of expression", _shown(token))
        return node

    # -- token helpers ------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Token:
        token = self.tokens[min(self.index + ahead, len(self.tokens) - 1)]
        if token.kind == "error":
            raise token.value
        return token

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, text: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text == text

    def count(self, token: _Token) -> None:
        """Count one part: a name, a value, an operator or a function call."""
        self.nodes += 1
        if self.nodes > MAX_EXPRESSION_NODES:
            raise _ExpressionError(
                token.pos,
                f"at most {MAX_EXPRESSION_NODES} parts in an expression",
                "more (split it into several audiences)",
            )

    def counted(self, node: _NodeT, token: _Token) -> _NodeT:
        self.count(token)
        return node

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise _ExpressionError(
                token.pos, f"at most {MAX_EXPRESSION_DEPTH} levels of nesting", "more"
            )

    # -- grammar ------------------------------------------------------------

    def expression(self, what: str, after: str | None) -> tuple[_Node, str]:
        first, kind = self.conjunction(what, after)
        if not self.at("keyword", "or"):
            return first, kind
        parts = [first]
        while self.at("keyword", "or"):
            self.count(self.advance())
            part, _ = self.conjunction("a comparison", "or")
            parts.append(part)
        return _Logic("or", tuple(parts)), _BOOLEAN

    def conjunction(self, what: str, after: str | None) -> tuple[_Node, str]:
        first, kind = self.negation(what, after)
        if not self.at("keyword", "and"):
            return first, kind
        parts = [first]
        while self.at("keyword", "and"):
            self.count(self.advance())
            part, _ = self.negation("a comparison", "and")
            parts.append(part)
        return _Logic("and", tuple(parts)), _BOOLEAN

    def negation(self, what: str, after: str | None) -> tuple[_Node, str]:
        if not self.at("keyword", "not"):
            return self.comparison(what, after)
        token = self.advance()
        self.enter(token)
        operand, _ = self.negation("a comparison", "not")
        self.depth -= 1
        return self.counted(_Not(operand), token), _BOOLEAN

    def comparison(self, what: str, after: str | None) -> tuple[_Node, str]:
        left, left_kind = self.operand(what, after)
        token = self.peek()
        if token.kind == "symbol" and token.text in _COMPARISONS:
            self.advance()
            right, right_kind = self.operand("a value", token.text)
            self.check_comparison(token, left, left_kind, right, right_kind)
            return self.counted(_Comparison(token.text, left, right), token), _BOOLEAN
        if token.kind == "keyword" and token.text in ("in", "not"):
            if token.text == "not":
                following = self.peek(1)
                if not (following.kind == "keyword" and following.text == "in"):
                    raise _ExpressionError(following.pos, "'in' after 'not'", _shown(following))
                self.advance()
            self.advance()
            op = "not in" if token.text == "not" else "in"
            container, container_kind = self.operand("a list", op)
            self.check_membership(token, op, left, left_kind, container, container_kind)
            return self.counted(_Membership(op == "not in", left, container), token), _BOOLEAN
        if left_kind not in (_BOOLEAN, _ANY):
            raise _ExpressionError(
                token.pos, f"a comparison operator after {_describe(left)}", _shown(token)
            )
        return left, left_kind

    def operand(self, what: str, after: str | None) -> tuple[_Node, str]:
        token = self.advance()
        missing = f"{what} after '{after}'" if after else what
        if token.kind == "number":
            return self.counted(_Literal(token.value, token.text), token), _NUMBER
        if token.kind == "symbol" and token.text == "-":
            number = self.advance()
            if number.kind != "number":
                raise _ExpressionError(number.pos, "a number after '-'", _shown(number))
            literal = _Literal(-number.value, f"-{number.text}")
            return self.counted(literal, token), _NUMBER
        if token.kind == "string":
            return self.counted(_Literal(token.value, token.text), token), _STRING
        if token.kind == "keyword" and token.text in ("true", "false"):
            return self.counted(_Literal(token.text == "true", token.text), token), _BOOLEAN
        if token.kind == "keyword" and token.text == "null":
            return self.counted(_Literal(None, "null"), token), _NULL
        if token.kind == "symbol" and token.text == "[":
            return self.list_literal(token), _LIST
        if token.kind == "symbol" and token.text == "(":
            self.enter(token)
            node, kind = self.expression("a comparison", "(")
            closing = self.advance()
            if closing.kind != "symbol" or closing.text != ")":
                raise _ExpressionError(
                    closing.pos,
                    f"')' to close the '(' at column {token.pos + 1}",
                    _shown(closing),
                )
            self.depth -= 1
            return node, kind
        if token.kind == "name":
            if self.at("symbol", "("):
                return self.call(token)
            return self.reference(token)
        raise _ExpressionError(token.pos, missing, _shown(token))

    def list_literal(self, opening: _Token) -> _Node:
        items: list[Any] = []
        if self.at("symbol", "]"):
            self.advance()
            return self.counted(_ListLiteral(()), opening)
        while True:
            item, _ = self.operand("a value", None)
            if not isinstance(item, _Literal):
                raise _ExpressionError(
                    self.peek(-1).pos,
                    "a number, string, true, false or null in a list",
                    _describe(item),
                )
            items.append(item.value)
            token = self.advance()
            if token.kind == "symbol" and token.text == "]":
                return self.counted(_ListLiteral(tuple(items)), opening)
            if token.kind != "symbol" or token.text != ",":
                raise _ExpressionError(token.pos, "',' or ']' in a list", _shown(token))

    def call(self, name: _Token) -> tuple[_Node, str]:
        if name.text not in FUNCTIONS:
            raise _ExpressionError(
                name.pos, "a function among " + ", ".join(FUNCTIONS), f"'{name.text}('"
            )
        self.advance()  # "("
        argument = self.advance()
        if argument.kind != "name":
            raise _ExpressionError(
                argument.pos, f"a name inside {name.text}(...)", _shown(argument)
            )
        ref, kind = self.reference(argument)
        if kind not in (_NUMBER, _ANY):
            raise _ExpressionError(
                argument.pos, f"a time in epoch ms inside {name.text}(...)", _labelled(ref, kind)
            )
        closing = self.advance()
        if closing.kind != "symbol" or closing.text != ")":
            raise _ExpressionError(closing.pos, f"')' to close {name.text}(", _shown(closing))
        return self.counted(_DaysSince(ref), name), _NUMBER

    def reference(self, token: _Token) -> tuple[_Ref, str]:
        parts = token.text.split(".")
        scope = self.scope
        if len(parts) == 1 and parts[0] in NAMESPACES:
            raise _ExpressionError(
                token.pos, f"'{parts[0]}.' followed by a name", f"'{token.text}' alone"
            )
        if len(parts) == 1 and parts[0] in FUNCTIONS:
            raise _ExpressionError(token.pos, f"'(' after '{token.text}'", _shown(self.peek()))
        if len(parts) > 2:
            raise _ExpressionError(token.pos, "a name like metric.orders", f"'{token.text}'")
        namespace, name = ("trait", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if namespace not in NAMESPACES:
            raise _ExpressionError(
                token.pos,
                "one of " + ", ".join(f"{n}." for n in NAMESPACES) + " before a name",
                f"'{namespace}.'",
            )
        kind = _ANY
        if namespace == "trait":
            if name not in scope.traits:
                raise _ExpressionError(
                    token.pos,
                    "a trait defined in this file",
                    f"'{name}'" + _did_you_mean(name, scope.traits),
                )
            kind = scope.traits[name]
        elif namespace == "audience":
            kind = _BOOLEAN
            if name == scope.this_audience:
                raise _ExpressionError(
                    token.pos, "an audience defined above this one", f"'{name}' (this audience)"
                )
            if name in scope.later_audiences:
                raise _ExpressionError(
                    token.pos,
                    "an audience defined above this one",
                    f"'{name}' (defined below, line {scope.later_audiences[name]})",
                )
            if name not in scope.earlier_audiences:
                raise _ExpressionError(
                    token.pos,
                    "an audience defined in this file",
                    f"'{name}'" + _did_you_mean(name, scope.earlier_audiences),
                )
        else:
            known = scope.known[namespace]
            if known is not None and name not in known:
                raise _ExpressionError(
                    token.pos, f"a known {namespace}", f"'{name}'" + _did_you_mean(name, known)
                )
        return self.counted(_Ref(namespace, name, token.text), token), kind

    # -- static checks ------------------------------------------------------

    def check_comparison(
        self, op: _Token, left: _Node, left_kind: str, right: _Node, right_kind: str
    ) -> None:
        sides = ((left, left_kind), (right, right_kind))
        if op.text in _ORDERING:
            for node, kind in sides:
                if kind not in (_NUMBER, _STRING, _ANY):
                    raise _ExpressionError(
                        op.pos,
                        f"a number or a string on each side of '{op.text}'",
                        _labelled(node, kind),
                    )
        else:
            for node, kind in sides:
                if kind == _LIST:
                    raise _ExpressionError(
                        op.pos,
                        f"a single value on each side of '{op.text}' (or use 'in')",
                        _describe(node),
                    )
        kinds = {left_kind, right_kind} - {_ANY, _NULL}
        if len(kinds) > 1:
            raise _ExpressionError(
                op.pos,
                f"values of the same kind on each side of '{op.text}'",
                f"{_labelled(left, left_kind)} and {_labelled(right, right_kind)}",
            )

    def check_membership(
        self,
        op: _Token,
        text: str,
        item: _Node,
        item_kind: str,
        container: _Node,
        container_kind: str,
    ) -> None:
        if item_kind == _LIST:
            raise _ExpressionError(op.pos, f"a single value before '{text}'", "a list")
        if container_kind not in (_LIST, _ANY):
            raise _ExpressionError(
                op.pos,
                f"a list or a name after '{text}'",
                _labelled(container, container_kind),
            )
        if isinstance(container, _ListLiteral) and item_kind not in (_ANY, _NULL):
            kinds = {_kind_of(value) for value in container.items}
            if container.items and item_kind not in kinds and _NULL not in kinds:
                raise _ExpressionError(
                    op.pos,
                    f"a list with {_PLURALS[item_kind]} in it to compare {_describe(item)} with",
                    "a list of " + " and ".join(sorted(_PLURALS[k] for k in kinds)),
                )


def _kind_of(value: Any) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, str):
        return _STRING
    return _NUMBER


def _compile(node: _Node) -> _Evaluator:
    """Turn a checked tree into nested closures, built once at load."""
    if isinstance(node, _Literal):
        constant = node.value
        return lambda _context: constant
    if isinstance(node, _ListLiteral):
        items = node.items
        return lambda _context: items
    if isinstance(node, _Ref):
        return _compile_ref(node)
    if isinstance(node, _DaysSince):
        read = _compile_ref(node.ref)

        def days_since(context: Context) -> float | None:
            then = read(context)
            if not _is_number(then):
                return None
            return float((context.now_ms - then) / DAY_MS)

        return days_since
    if isinstance(node, _Comparison):
        op, left, right = node.op, _compile(node.left), _compile(node.right)
        if isinstance(node.right, _Literal) and not isinstance(node.left, _Literal):
            trait = None
            if isinstance(node.left, _Ref) and node.left.namespace == "trait":
                trait = node.left.name
            return _compare_with_constant(op, left, node.right.value, trait)
        return lambda context: _compare(op, left(context), right(context))
    if isinstance(node, _Membership):
        item, container = _compile(node.item), _compile(node.container)
        if node.negated:
            return lambda context: not _member(item(context), container(context))
        return lambda context: _member(item(context), container(context))
    if isinstance(node, _Not):
        operand = _compile(node.operand)
        return lambda context: operand(context) is not True
    parts = tuple(_compile(part) for part in node.parts)
    # A condition holds only when it is exactly true: a null metric is not.
    if len(parts) == 2:  # the common case, without a generator per test
        first, second = parts
        if node.op == "and":
            return lambda context: first(context) is True and second(context) is True
        return lambda context: first(context) is True or second(context) is True
    if node.op == "and":
        return lambda context: all(part(context) is True for part in parts)
    return lambda context: any(part(context) is True for part in parts)


def _compare_with_constant(
    op: str, read: _Evaluator, constant: Any, trait: str | None = None
) -> _Evaluator:
    """``read(context) <op> constant``, as :func:`_compare` decides it, with
    the constant's kind worked out once (the common ``orders_30d >= 2``).
    ``trait``: the trait ``read`` reads, if it reads one bare (then read
    here without the extra call)."""
    if op in _ORDERING and _is_number(constant):
        order = _ORDERING[op]
        if trait is not None:

            def ordered_trait(context: Context) -> bool:
                value = context.traits.get(trait)
                return type(value) in _NUMBER_TYPES and bool(order(value, constant))

            return ordered_trait

        def ordered_number(context: Context) -> bool:
            value = read(context)
            # type(), not isinstance(): a bool is not a number here.
            return type(value) in _NUMBER_TYPES and bool(order(value, constant))

        return ordered_number
    if op in ("==", "!=") and _is_number(constant):
        negated = op == "!="

        def equal_number(context: Context) -> bool:
            value = read(context)
            return (type(value) in _NUMBER_TYPES and value == constant) is not negated

        return equal_number
    if op in ("==", "!=") and (constant is None or type(constant) is str):
        # _equal with a text or null constant: the same type and value
        negated, kind = op == "!=", type(constant)

        def equal_constant(context: Context) -> bool:
            value = read(context)
            return (type(value) is kind and value == constant) is not negated

        return equal_constant
    return lambda context: _compare(op, read(context), constant)


def _compile_ref(ref: _Ref) -> _Evaluator:
    name = ref.name
    if ref.namespace == "trait":
        return lambda context: context.traits.get(name)
    if ref.namespace == "metric":
        return lambda context: context.metrics.get(name)
    if ref.namespace == "score":
        return lambda context: context.scores.get(name)
    if ref.namespace == "segment":
        return lambda context: context.segments.get(name)
    return lambda context: context.audiences.get(name) is True


def _directions(node: _Node, earlier: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """See :meth:`Audience.directions`."""
    if isinstance(node, _Ref):
        if node.namespace == "trait":
            return {node.name: 0}  # read bare: no order known
        if node.namespace == "audience":
            return dict(earlier.get(node.name, {}))
        return {}
    if isinstance(node, _Comparison) and node.op in _ORDERING:
        left, right = node.left, node.right
        if isinstance(left, _Ref) and left.namespace == "trait" and _is_constant(right):
            return {left.name: 1 if node.op in (">", ">=") else -1}
        if isinstance(right, _Ref) and right.namespace == "trait" and _is_constant(left):
            return {right.name: 1 if node.op in ("<", "<=") else -1}
    if isinstance(node, _Not):
        return {name: -way for name, way in _directions(node.operand, earlier).items()}
    if isinstance(node, _Logic):
        merged: dict[str, int] = {}
        for part in node.parts:
            for name, way in _directions(part, earlier).items():
                merged[name] = way if merged.get(name, way) == way else 0
        return merged
    # Anything else that reads a trait (==, !=, in, days_since) follows it either way.
    return {
        ref.name: 0 for ref in _walk(node) if isinstance(ref, _Ref) and ref.namespace == "trait"
    } | {
        name: 0
        for ref in _walk(node)
        if isinstance(ref, _Ref) and ref.namespace == "audience"
        for name in earlier.get(ref.name, {})
    }


# ``a <op> b`` is ``b <mirrored op> a``.
_MIRRORED: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


_ConstantT = TypeVar("_ConstantT")


def _trait_constants(
    node: _Node,
    found: dict[str, frozenset[_ConstantT] | None],
    of: Callable[[str, Any], frozenset[_ConstantT]],
) -> None:
    """For each trait ``node`` reads: what ``of(op, constant)`` gives for
    each of its comparisons with a constant, joined; ``None`` where it is
    read in any other way. ``found`` is filled in (:meth:`Audience.count_bounds`,
    :meth:`Audience.compared_numbers`)."""
    if isinstance(node, _Comparison):
        op, left, right = node.op, node.left, node.right
        if isinstance(left, _Literal) and isinstance(right, _Ref):
            op, left, right = _MIRRORED[op], right, left
        if isinstance(left, _Ref) and left.namespace == "trait" and isinstance(right, _Literal):
            if left.name not in found or found[left.name] is not None:
                held = found.get(left.name) or frozenset()
                found[left.name] = held | of(op, right.value)
            return
    if isinstance(node, _Ref):
        if node.namespace == "trait":
            found[node.name] = None  # read otherwise
        return
    for child in _children(node):
        _trait_constants(child, found, of)


def _numbers_of(op: str, constant: Any) -> frozenset[float]:
    """The constant of ``value <op> constant`` where it is a finite number:
    with a text, null or boolean constant the answer depends only on whether
    the value is a number, null or something else.

    >>> [sorted(_numbers_of(op, c)) for op, c in [(">=", 2), ("==", None), ("<", "a")]]
    [[2], [], []]
    """
    if _is_number(constant) and math.isfinite(constant):
        return frozenset({constant})
    return frozenset()


def _bounds_of(op: str, constant: Any) -> frozenset[int]:
    """The whole numbers ``k`` at which ``count <op> constant`` may answer
    otherwise for ``k`` than for ``k + 1``. A count is never equal to, nor
    ordered with, a text, null or boolean, and is always below infinity: the
    answer to those never changes.

    >>> [sorted(_bounds_of(op, c)) for op, c in [(">=", 2), (">", 2.5), ("==", 0), ("<", "a")]]
    [[1], [2], [-1, 0], []]
    """
    if not _is_number(constant) or not math.isfinite(constant):
        return frozenset()
    if op in (">", "<="):
        return frozenset({math.floor(constant)})
    if op in (">=", "<"):
        return frozenset({math.ceil(constant) - 1})
    return frozenset({math.ceil(constant) - 1, math.floor(constant)})  # == and !=


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _DaysSince):
        return (node.ref,)
    if isinstance(node, _Comparison):
        return (node.left, node.right)
    if isinstance(node, _Membership):
        return (node.item, node.container)
    if isinstance(node, _Logic):
        return node.parts
    if isinstance(node, _Not):
        return (node.operand,)
    return ()


def _is_constant(node: _Node) -> bool:
    # Only a literal: a metric such as days_since_last_order moves with time.
    return isinstance(node, _Literal)


def _walk(node: _Node) -> Iterator[_Node]:
    yield node
    if isinstance(node, _DaysSince):
        yield from _walk(node.ref)
    elif isinstance(node, _Comparison):
        yield from _walk(node.left)
        yield from _walk(node.right)
    elif isinstance(node, _Membership):
        yield from _walk(node.item)
        yield from _walk(node.container)
    elif isinstance(node, _Logic):
        for part in node.parts:
            yield from _walk(part)
    elif isinstance(node, _Not):
        yield from _walk(node.operand)


@dataclass(frozen=True, slots=True)
class _TimeTest:
    """A comparison of ``days_since(x)`` with something time does not change."""

    op: str
    then: _Evaluator  # reads x
    other: _Evaluator
    days_left: bool  # days_since(x) is on the left of op
    # (x, threshold) -> the flip worked out for a moment well before it: the
    # same for every such moment (a customer's x changes rarely)
    _early: dict[tuple[Any, Any], int | None] = field(default_factory=dict, compare=False)

    def flip_ms(self, context: Context, now_ms: int) -> int | None:
        """When the comparison next changes truth after ``now_ms``, or ``None``."""
        then, threshold = self.then(context), self.other(context)
        if not _is_number(then) or not _is_number(threshold):
            return None
        boundary = then + threshold * DAY_MS
        if not math.isfinite(boundary):
            return None
        edge = math.floor(boundary)
        if now_ms + 3 > edge:
            if now_ms >= edge + 2:
                return None  # past the boundary: days_since only grows, no flip is left
            return self._flip(then, threshold, now_ms)
        # Well before the boundary the comparison's truth, and so its flip,
        # does not depend on now_ms (days_since only grows).
        key = (then, threshold)
        early = self._early
        if key not in early:
            if len(early) >= 65_536:
                early.clear()
            early[key] = self._flip(then, threshold, now_ms)
        return early[key]

    def _flip(self, then: Any, threshold: Any, now_ms: int) -> int | None:
        boundary = then + threshold * DAY_MS
        if not math.isfinite(boundary):
            return None
        # The exact millisecond depends on float rounding in the division
        # below, so probe around the boundary with the test evaluate() uses.
        op, days_left = self.op, self.days_left
        edge: int = math.floor(boundary)
        base: bool | None = None
        probes: tuple[int, ...] = (now_ms, *range(max(now_ms + 1, edge - 2), edge + 3))
        for moment in probes:
            days = (moment - then) / DAY_MS
            holds = _compare(op, days, threshold) if days_left else _compare(op, threshold, days)
            if base is None:
                base = holds
            elif holds != base:
                return moment
        return None


def _time_tests(tree: _Node) -> tuple[_TimeTest, ...]:
    tests = []
    for node in _walk(tree):
        if not isinstance(node, _Comparison):
            continue
        left, right = node.left, node.right
        # Two days_since on both sides move together: their comparison never flips.
        if isinstance(left, _DaysSince) and not isinstance(right, _DaysSince):
            tests.append(_TimeTest(node.op, _compile_ref(left.ref), _compile(right), True))
        elif isinstance(right, _DaysSince) and not isinstance(left, _DaysSince):
            tests.append(_TimeTest(node.op, _compile_ref(right.ref), _compile(left), False))
    return tuple(tests)


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 2)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        shown = value if len(value) <= 64 else value[:61] + "..."
        return shown if re.fullmatch(r"[\w.@:/-]+", shown) else json.dumps(shown)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------
# Audiences and the file
# --------------------------------------------------------------------------


@dataclass
class Context:
    """What an audience reads for one customer at one moment.

    ``traits`` holds trait values (see :func:`trait_values`); ``metrics``,
    ``scores`` and ``segments`` the built-in metrics, model scores and
    segment dimension values by name; ``audiences`` the audiences already
    decided (:func:`evaluate_audiences` fills it in file order). A name
    missing from its mapping reads as null.
    """

    now_ms: int
    traits: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Any] = field(default_factory=dict)
    segments: Mapping[str, Any] = field(default_factory=dict)
    audiences: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Audience:
    """A named condition over one customer's traits, metrics, scores and segments.

    Built by :func:`load_definitions`: ``source`` is the ``when`` text and
    ``line`` the line it starts on.
    """

    name: str
    source: str
    line: int
    description: str | None
    _tree: _Node = field(repr=False, compare=False)
    _check: _Evaluator = field(repr=False, compare=False)
    _time_tests: tuple[_TimeTest, ...] = field(init=False, repr=False, compare=False)
    # What explain() shows: (label, what reads it), in reading order
    _shown: tuple[tuple[str, _Evaluator], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_time_tests", _time_tests(self._tree))
        object.__setattr__(self, "_shown", _explained(self._tree))

    def evaluate(self, context: Context) -> bool:
        """Whether the customer described by ``context`` is in the audience."""
        return self._check(context) is True

    def compiled(self) -> Callable[[Context], Any]:
        """The compiled condition: the customer is in the audience when it
        returns exactly ``True`` (what :meth:`evaluate` does, one call less)."""
        return self._check

    def names(self) -> frozenset[str]:
        """The qualified names the condition reads, e.g. ``trait.orders_30d``."""
        return frozenset(
            f"{node.namespace}.{node.name}" for node in _walk(self._tree) if isinstance(node, _Ref)
        )

    @property
    def has_time_tests(self) -> bool:
        """Whether a ``days_since`` comparison can flip as time passes (:meth:`next_change_ms`)."""
        return bool(self._time_tests)

    def directions(self, earlier: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
        """How membership follows each trait it reads, directly or through the
        audiences above it (``earlier``: their own directions, by name).

        ``1``: never leaves when the trait rises, never enters when it falls
        (``orders_30d >= 2``); ``-1``: the other way round (``orders_30d < 2``);
        ``0``: either way (``==``, ``in``, ``days_since``, a trait read bare,
        or read both ways).

        >>> defs = load_definitions(
        ...     "version: 1\\ntraits: {n: {aggregate: count, topic: support}, "
        ...     "m: {aggregate: count, topic: purchases}}\\n"
        ...     "audiences: {a: {when: 'n >= 2 and not m > 0'}, b: {when: 'audience.a or m == 1'}}"
        ... )
        >>> a = defs.audiences["a"].directions({})
        >>> a, defs.audiences["b"].directions({"a": a})
        ({'n': 1, 'm': -1}, {'n': 1, 'm': 0})
        """
        return _directions(self._tree, earlier)

    def count_bounds(self) -> dict[str, frozenset[int] | None]:
        """For each trait the condition reads: the whole numbers ``k`` at
        which a comparison of the trait with a constant may answer otherwise
        for a count of ``k`` than for ``k + 1``; ``None`` where the trait is
        read in any other way (bare, ``in``, ``days_since``, against another
        name). A count that falls from ``a`` to ``b`` can change the
        condition only where one of them lies in ``b .. a - 1``.

        >>> defs = load_definitions(
        ...     "version: 1\\ntraits: {n: {aggregate: count, topic: support}, "
        ...     "m: {aggregate: count, topic: purchases}}\\n"
        ...     "audiences: {a: {when: 'n >= 2 and (m == 0 or 3 < n) and m in [1, 5]'}}"
        ... )
        >>> sorted(defs.audiences["a"].count_bounds()["n"]), defs.audiences["a"].count_bounds()["m"]
        ([1, 3], None)
        """
        found: dict[str, frozenset[int] | None] = {}
        _trait_constants(self._tree, found, _bounds_of)
        return found

    def compared_numbers(self) -> dict[str, frozenset[float] | None]:
        """For each trait the condition reads: the numbers it is compared
        with; ``None`` where the trait is read in any other way. The
        condition's answer depends on the trait only through where its value
        lies among them (below, at, above each), and whether it is a number.

        >>> defs = load_definitions(
        ...     "version: 1\\ntraits: {s: {aggregate: sum, topic: purchases, property: amount}}\\n"
        ...     "audiences: {a: {when: 's >= 100 and (s < 500 or s == 1000)'}}"
        ... )
        >>> sorted(defs.audiences["a"].compared_numbers()["s"])
        [100, 500, 1000]
        """
        found: dict[str, frozenset[float] | None] = {}
        _trait_constants(self._tree, found, _numbers_of)
        return found

    def tests_all_time(self) -> bool:
        """Whether time moves the condition only through its ``days_since``
        comparisons (:meth:`next_change_ms`): every ``days_since`` in it is one
        side of a comparison whose other side has none."""
        read = sum(1 for node in _walk(self._tree) if isinstance(node, _DaysSince))
        return read == len(self._time_tests)

    def reads_time(self) -> bool:
        """Whether the condition reads ``days_since`` anywhere: it can change as time passes."""
        return any(isinstance(node, _DaysSince) for node in _walk(self._tree))

    def next_change_ms(self, context: Context, now_ms: int) -> int | None:
        """The earliest time after ``now_ms`` at which a ``days_since`` test can flip.

        Only the passing of time is considered, every other value held as in
        ``context``: ``days_since(t) > 14`` flips just after ``t + 14`` days.
        Trait windows are the caller's business (:meth:`Trait.next_change_ms`).
        ``None`` when no such test can flip any more.
        """
        first: int | None = None
        for test in self._time_tests:
            moment = test.flip_ms(context, now_ms)
            if moment is not None and (first is None or moment < first):
                first = moment
        return first

    def explain(self, context: Context) -> str:
        """The values the condition read, as ``name=value`` pairs in reading order.

        A time read through ``days_since`` is shown as the days.

        >>> defs = load_definitions('''
        ... version: 1
        ... traits: {spend: {aggregate: sum, property: amount, topic: purchases}}
        ... audiences: {big: {when: "spend >= 500 and segment.churn_risk != 'low'"}}
        ... ''')
        >>> context = Context(0, traits={"spend": 612.5}, segments={"churn_risk": "high"})
        >>> defs.audiences["big"].explain(context)
        'spend=612.5 segment.churn_risk=high'
        """
        return " ".join(f"{label}={_format(read(context))}" for label, read in self._shown)


def _explained(tree: _Node) -> tuple[tuple[str, _Evaluator], ...]:
    """What :meth:`Audience.explain` shows, compiled once: each reference (a
    time read through ``days_since`` as the days) with its reader."""
    shown: dict[str, _Evaluator] = {}
    for node in _walk(tree):
        if isinstance(node, _DaysSince):
            shown.setdefault(f"days_since({node.ref.text})", _compile(node))
        elif isinstance(node, _Ref):
            shown.setdefault(node.text, _compile_ref(node))
    # A reference seen only inside days_since(...) is listed as days.
    inside = {node.ref.text for node in _walk(tree) if isinstance(node, _DaysSince)}
    direct = _direct_refs(tree)
    return tuple(
        (label, read) for label, read in shown.items() if label not in inside or label in direct
    )


def _direct_refs(node: _Node) -> set[str]:
    if isinstance(node, _Ref):
        return {node.text}
    if isinstance(node, _DaysSince | _Literal | _ListLiteral):
        return set()
    if isinstance(node, _Comparison):
        return _direct_refs(node.left) | _direct_refs(node.right)
    if isinstance(node, _Membership):
        return _direct_refs(node.item) | _direct_refs(node.container)
    if isinstance(node, _Not):
        return _direct_refs(node.operand)
    return set().union(*(_direct_refs(part) for part in node.parts))


@dataclass(frozen=True, slots=True)
class Definitions:
    """A checked definitions file.

    ``digest`` is the SHA-256 of the file's bytes (UTF-8): it identifies the
    content, whatever ``version`` says. ``audiences`` keep file order.
    """

    version: int
    digest: str
    traits: Mapping[str, Trait]
    audiences: Mapping[str, Audience]
    # trait name -> (its fingerprint, its value as of a moment: Trait.reader)
    readers: Mapping[str, tuple[str, Callable[[TraitState | None, int], TraitValue]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        readers = {name: (t.fingerprint, t.reader()) for name, t in self.traits.items()}
        object.__setattr__(self, "readers", readers)


class _Reader:
    """Walks the composed YAML nodes, so every error can name its line."""

    def __init__(self, source: str) -> None:
        self.source = source
        # One constructor per file: it caches what it built by node.
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node | None, path: str, expected: str, got: str) -> DefinitionsError:
        line = node.start_mark.line + 1 if node is not None else None
        return DefinitionsError(self.source, line, path, expected, got)

    @staticmethod
    def shown(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        text = str(node.value)
        if node.tag == "tag:yaml.org,2002:null" and text in ("", "~", "null", "Null", "NULL"):
            return "nothing" if text in ("", "~") else "null"
        return repr(text if len(text) <= 40 else text[:37] + "...")

    def entries(
        self, node: yaml.Node, path: str, what: str
    ) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """The ``(key, key node, value node)`` of a mapping, in order, keys checked unique."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, what, self.shown(node))
        seen: set[str] = set()
        pairs = []
        for key_node, value_node in node.value:
            # Keys are taken as written: YAML 1.1 would read a key `no` as false.
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, path, "a plain key", self.shown(key_node))
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise self.fail(key_node, where, "each key once", "a second one")
            seen.add(key)
            pairs.append((key, key_node, value_node))
        return pairs

    def fields(
        self,
        node: yaml.Node,
        path: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, yaml.Node]:
        """A mapping with a fixed set of keys; unknown keys and missing required ones fail."""
        found: dict[str, yaml.Node] = {}
        for key, key_node, value_node in self.entries(node, path, "a mapping"):
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                raise self.fail(
                    key_node,
                    where,
                    "one of the keys " + ", ".join(allowed),
                    f"an unknown key{_did_you_mean(key, allowed)}",
                )
            found[key] = value_node
        for key in required:
            if key not in found:
                raise self.fail(node, path, f"a '{key}' key", f"no '{key}'")
        return found

    def value(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, path, "a number, a string, true, false or null", self.shown(node))
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, path, "a plain value", f"tag {node.tag}") from exc
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(node, path, "a finite number", self.shown(node))
        if value is not None and not isinstance(value, bool | int | float | str):
            raise self.fail(node, path, "a number, a string, true, false or null", self.shown(node))
        return value

    def string(self, node: yaml.Node, path: str, what: str = "a string") -> str:
        value = self.value(node, path) if isinstance(node, yaml.ScalarNode) else node
        if not isinstance(value, str) or not value:
            hint = (
                " (quote it: YAML reads yes/no/on/off as booleans)"
                if isinstance(value, bool)
                else ""
            )
            raise self.fail(node, path, what, self.shown(node) + hint)
        return value

    def integer(self, node: yaml.Node, path: str, low: int, high: int | None) -> int:
        value = self.value(node, path) if isinstance(node, yaml.ScalarNode) else None
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(node, path, f"a whole number {bounds}", self.shown(node))
        if value < low or (high is not None and value > high):
            raise self.fail(node, path, f"a whole number {bounds}", str(value))
        return value

    def name(self, node: yaml.Node, path: str, what: str) -> str:
        name = str(node.value)
        if not NAME_PATTERN.fullmatch(name):
            raise self.fail(
                node,
                path,
                f"{what} name of a-z, 0-9 and _, starting with a letter, at most 63 characters",
                repr(name),
            )
        if name in RESERVED_NAMES:
            raise self.fail(node, path, f"{what} name that is not a reserved word", repr(name))
        return name


_TRAIT_KEYS: Final = (
    "aggregate",
    "topic",
    "type",
    "property",
    "where",
    "window_days",
    "description",
)
_PREDICATE_KEYS: Final = ("property", "op", "value")
# Spellings of operators from other languages, pointed at ours.
_OP_SPELLINGS: Final = {"=": "==", "<>": "!=", "=>": ">=", "=<": "<=", "not in": "not_in"}
_AUDIENCE_KEYS: Final = ("when", "description")


def _read_trait(reader: _Reader, name: str, key_node: yaml.Node, node: yaml.Node) -> Trait:
    path = f"traits.{name}"
    found = reader.fields(node, path, _TRAIT_KEYS, required=("aggregate", "topic"))
    aggregate = reader.string(found["aggregate"], f"{path}.aggregate")
    if aggregate not in AGGREGATES:
        raise reader.fail(
            found["aggregate"],
            f"{path}.aggregate",
            "one of " + ", ".join(AGGREGATES),
            repr(aggregate) + _did_you_mean(aggregate, AGGREGATES),
        )
    topic = reader.string(found["topic"], f"{path}.topic")
    if topic not in TOPICS:
        raise reader.fail(
            found["topic"],
            f"{path}.topic",
            "one of " + ", ".join(TOPICS),
            repr(topic) + _did_you_mean(topic, TOPICS),
        )
    event_type = reader.string(found["type"], f"{path}.type") if "type" in found else None
    prop = None
    if "property" in found:
        prop = reader.string(found["property"], f"{path}.property")
        if aggregate == "count":
            raise reader.fail(
                found["property"],
                f"{path}.property",
                "no property for a count (count counts events; filter with 'where')",
                repr(prop),
            )
    elif aggregate not in ("count", "latest"):
        raise reader.fail(
            node, path, f"a 'property' key (the value {aggregate} is taken of)", "no 'property'"
        )
    where: list[Predicate] = []
    if "where" in found:
        items = found["where"]
        if not isinstance(items, yaml.SequenceNode):
            raise reader.fail(items, f"{path}.where", "a list of predicates", reader.shown(items))
        if len(items.value) > MAX_PREDICATES:
            raise reader.fail(
                items.value[MAX_PREDICATES],
                f"{path}.where",
                f"at most {MAX_PREDICATES} predicates",
                f"{len(items.value)}",
            )
        for index, item in enumerate(items.value):
            where.append(_read_predicate(reader, f"{path}.where[{index}]", item))
    window = None
    if "window_days" in found:
        window = reader.integer(found["window_days"], f"{path}.window_days", 1, MAX_WINDOW_DAYS)
    description = None
    if "description" in found:
        description = reader.string(found["description"], f"{path}.description")
    return Trait(
        name=name,
        aggregate=aggregate,
        topic=topic,
        type=event_type,
        property=prop,
        where=tuple(where),
        window_days=window,
        description=description,
        line=key_node.start_mark.line + 1,
    )


def _read_predicate(reader: _Reader, path: str, node: yaml.Node) -> Predicate:
    found = reader.fields(node, path, _PREDICATE_KEYS, required=("property", "op"))
    prop = reader.string(found["property"], f"{path}.property")
    op = reader.string(found["op"], f"{path}.op")
    if op not in PREDICATE_OPS:
        raise reader.fail(
            found["op"],
            f"{path}.op",
            "one of " + " ".join(PREDICATE_OPS),
            repr(op) + _did_you_mean(_OP_SPELLINGS.get(op, op), PREDICATE_OPS),
        )
    if op == "exists":
        if "value" in found:
            raise reader.fail(found["value"], f"{path}.value", "no value with 'exists'", "one")
        return Predicate(prop, "exists")
    if "value" not in found:
        raise reader.fail(node, path, f"a 'value' key for '{op}'", "no 'value'")
    value_node = found["value"]
    if op in ("in", "not_in"):
        if not isinstance(value_node, yaml.SequenceNode):
            raise reader.fail(
                value_node,
                f"{path}.value",
                f"a list of values for '{op}'",
                reader.shown(value_node),
            )
        values = tuple(
            reader.value(item, f"{path}.value[{index}]")
            for index, item in enumerate(value_node.value)
        )
        return Predicate(prop, op, values)
    value = reader.value(value_node, f"{path}.value")
    if op in _ORDERING and not (_is_number(value) or isinstance(value, str)):
        raise reader.fail(
            value_node,
            f"{path}.value",
            f"a number or a string for '{op}'",
            reader.shown(value_node),
        )
    return Predicate(prop, op, value)


def _trait_kind(trait: Trait) -> str:
    if trait.aggregate == "latest" and trait.property is not None:
        return _ANY
    return _NUMBER


def _read_audiences(
    reader: _Reader,
    node: yaml.Node | None,
    traits: Mapping[str, Trait],
    known: Mapping[str, frozenset[str] | None],
) -> dict[str, Audience]:
    if node is None:
        return {}
    entries = reader.entries(node, "audiences", "a mapping of audience names to audiences")
    if len(entries) > MAX_AUDIENCES:
        _, key_node, _ = entries[MAX_AUDIENCES]
        raise reader.fail(
            key_node, "audiences", f"at most {MAX_AUDIENCES} audiences", str(len(entries))
        )
    lines = {str(key_node.value): key_node.start_mark.line + 1 for _, key_node, _ in entries}
    trait_kinds = {name: _trait_kind(trait) for name, trait in traits.items()}
    audiences: dict[str, Audience] = {}
    for key, key_node, value_node in entries:
        name = reader.name(key_node, f"audiences.{key}", "an audience")
        path = f"audiences.{name}"
        found = reader.fields(value_node, path, _AUDIENCE_KEYS, required=("when",))
        when_node = found["when"]
        when_path = f"{path}.when"
        source = reader.string(when_node, when_path, "a condition in a string")
        line = when_node.start_mark.line + 1
        if len(source) > MAX_EXPRESSION_CHARS:
            raise reader.fail(
                when_node,
                when_path,
                f"at most {MAX_EXPRESSION_CHARS} characters",
                f"{len(source)}",
            )
        scope = _Scope(
            traits=trait_kinds,
            earlier_audiences=frozenset(audiences),
            later_audiences={k: v for k, v in lines.items() if k not in audiences and k != name},
            this_audience=name,
            known=known,
        )
        try:
            tree = _Parser(source, scope).parse()
        except _ExpressionError as exc:
            raise DefinitionsError(
                reader.source, line, when_path, exc.expected, exc.got, column=exc.pos + 1
            ) from None
        description = None
        if "description" in found:
            description = reader.string(found["description"], f"{path}.description")
        audiences[name] = Audience(name, source, line, description, tree, _compile(tree))
    return audiences


def _names(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def load_definitions(
    text: str,
    source: str = "definitions.yaml",
    *,
    known_metrics: Iterable[str] | None = None,
    known_scores: Iterable[str] | None = None,
    known_segments: Iterable[str] | None = None,
) -> Definitions:
    """Read and check a definitions file's text, compiling every audience.

    Parameters
    ----------
    text
        The file's content.
    source
        The file's name as error messages show it.
    known_metrics, known_scores, known_segments
        The names ``metric.x``, ``score.x`` and ``segment.x`` may use;
        ``None`` accepts any name.

    Raises
    ------
    DefinitionsError
        On anything the file gets wrong, naming the line, the field, what
        was expected there and what was found.

    Examples
    --------
    >>> load_definitions("version: 2").version
    2
    >>> load_definitions("version: 2\\ntraits: {n: {aggregate: sum, topic: purchases}}")
    Traceback (most recent call last):
    ...
    models.definitions.DefinitionsError: definitions.yaml line 2, traits.n: expected a \
'property' key (the value sum is taken of), got no 'property'
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "unreadable text"
        raise DefinitionsError(
            source, line, "", "valid YAML", f"a syntax error: {problem}"
        ) from exc
    except yaml.YAMLError as exc:
        raise DefinitionsError(source, None, "", "valid YAML", str(exc)) from exc
    if root is None:
        raise DefinitionsError(source, None, "", "a mapping with a 'version' key", "an empty file")
    found = reader.fields(root, "", ("version", "traits", "audiences"), required=("version",))
    version = reader.integer(found["version"], "version", 0, None)
    traits: dict[str, Trait] = {}
    traits_node = found.get("traits")
    if traits_node is not None and not _is_null(traits_node):
        entries = reader.entries(traits_node, "traits", "a mapping of trait names to traits")
        if len(entries) > MAX_TRAITS:
            _, key_node, _ = entries[MAX_TRAITS]
            raise reader.fail(key_node, "traits", f"at most {MAX_TRAITS} traits", str(len(entries)))
        for key, key_node, value_node in entries:
            name = reader.name(key_node, f"traits.{key}", "a trait")
            traits[name] = _read_trait(reader, name, key_node, value_node)
    audiences_node = found.get("audiences")
    if audiences_node is not None and _is_null(audiences_node):
        audiences_node = None
    known = {
        "metric": _names(known_metrics),
        "score": _names(known_scores),
        "segment": _names(known_segments),
    }
    audiences = _read_audiences(reader, audiences_node, traits, known)
    return Definitions(
        version=version,
        digest=digest,
        traits=MappingProxyType(traits),
        audiences=MappingProxyType(audiences),
    )


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def read_definitions(
    path: Path,
    *,
    known_metrics: Iterable[str] | None = None,
    known_scores: Iterable[str] | None = None,
    known_segments: Iterable[str] | None = None,
) -> Definitions:
    """Read and check the definitions file at ``path`` (see :func:`load_definitions`).

    Raises
    ------
    DefinitionsError
        Also when the file is missing, unreadable or not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DefinitionsError(
            str(path), None, "", "a readable file", exc.strerror or type(exc).__name__
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionsError(
            str(path), None, "", "UTF-8 text", f"a byte it cannot decode at offset {exc.start}"
        ) from exc
    # Decoding then encoding valid UTF-8 gives the same bytes back, so the
    # digest load_definitions takes of the text is the file's.
    return load_definitions(
        text,
        str(path),
        known_metrics=known_metrics,
        known_scores=known_scores,
        known_segments=known_segments,
    )


# --------------------------------------------------------------------------
# Per customer
# --------------------------------------------------------------------------


class TraitValues(Mapping[str, TraitValue]):
    """The traits' values as of ``as_of_ms``, each worked out when first read.

    ``states`` holds the customer's trait states by trait *fingerprint*, as
    a profile keeps them. An audience that reads few of many traits (``and``
    stops at the first part that fails) pays for those it reads.

    >>> defs = load_definitions("version: 1\\ntraits: {n: {aggregate: count, topic: support}}")
    >>> values = TraitValues(defs, {}, as_of_ms=0)
    >>> values.get("n"), values.get("missing"), dict(values)
    (0, None, {'n': 0})
    """

    __slots__ = ("_as_of", "_known", "_readers", "_states", "_traits")

    def __init__(
        self, definitions: Definitions, states: Mapping[str, TraitState], as_of_ms: int
    ) -> None:
        self._traits = definitions.traits
        self._readers = definitions.readers
        self._states = states
        self._as_of = as_of_ms
        self._known: dict[str, TraitValue] = {}

    def get(self, name: str, default: Any = None) -> Any:
        known = self._known
        if name in known:
            return known[name]
        reader = self._readers.get(name)
        if reader is None:
            return default
        fingerprint, read = reader
        value = known[name] = read(self._states.get(fingerprint), self._as_of)
        return value

    def __getitem__(self, name: str) -> TraitValue:
        if name not in self._traits:
            raise KeyError(name)
        value: TraitValue = self.get(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._traits)

    def __len__(self) -> int:
        return len(self._traits)


def trait_values(
    definitions: Definitions, states: Mapping[str, TraitState], as_of_ms: int
) -> dict[str, Any]:
    """Every trait's value as of ``as_of_ms``; a trait with no state has its empty value.

    >>> defs = load_definitions("version: 1\\ntraits: {n: {aggregate: count, topic: support}}")
    >>> trait_values(defs, {}, as_of_ms=0)
    {'n': 0}
    """
    return {
        name: trait.value(states.get(name), as_of_ms) for name, trait in definitions.traits.items()
    }


def evaluate_audiences(definitions: Definitions, context: Context) -> dict[str, bool]:
    """Decide every audience, in file order, so later ones read earlier ones.

    Whatever ``context.audiences`` holds is ignored: the audiences are all
    decided afresh.
    """
    decided: dict[str, bool] = {}
    reading = replace(context, audiences=decided)
    for name, audience in definitions.audiences.items():
        decided[name] = audience.evaluate(reading)
    return decided


def next_change_ms(
    definitions: Definitions, states: Mapping[str, TraitState], context: Context
) -> int | None:
    """The earliest time after ``context.now_ms`` at which any trait or audience can change
    with no new event, or ``None``.

    ``states`` holds the trait states by trait name. The worker keeps its own
    account of the same moments (:func:`models.audiences.note_next_change`),
    which also skips the window edges that cannot move an audience.
    """
    now = context.now_ms
    first: int | None = None
    for name, trait in definitions.traits.items():
        moment = trait.next_change_ms(states.get(name), now)
        if moment is not None and (first is None or moment < first):
            first = moment
    for audience in definitions.audiences.values():
        if audience.has_time_tests:
            moment = audience.next_change_ms(context, now)
            if moment is not None and (first is None or moment < first):
                first = moment
    return first
