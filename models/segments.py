"""Segments per customer, the changes between them, and the triggers they fire.

Each dimension is a small pure function of the customer's state (thresholds
are settings, :class:`SegmentConfig`):

==================  ==========================================================
dimension           values
==================  ==========================================================
lifecycle           prospect, new, active, at_risk, dormant, churned, reactivated
rfm_segment         Champions … Lost (the R×F map of ``docs/definitions.md``)
engagement          heavy, medium, light, inactive (sessions in 30 days)
loyalty             active_loyal, passive_loyal, chaser, drop_off
value_tier          top_5, top_20, rest (by simple CLV across the partition's buyers)
churn_risk          low, medium, high (with hysteresis)
nps_category        promoter, passive, detractor
preferred_channel   the channel with most interactions
persona             the behavioural cluster's persona (:mod:`models.clustering`)
==================  ==========================================================

:class:`Segmenter` decides them at the customer's *decision points* — after
an order, refund or support event, at the first event of a new day, and at
deadlines (a lifecycle threshold passing, a cart timing out, a ticket's SLA
running out) — never per click. A change of membership becomes a
segment-change record with a deterministic ``change_id``; a minimum dwell
time (all dimensions but lifecycle and NPS, which follow facts) and the
churn band's hysteresis stop flapping. Triggers follow changes and facts,
each rate-limited per customer and kind.

Decisions happen at the event times of the customer's events and at the
due times of their deadlines, whatever the batch boundaries. A decision
never goes back before the customer's previous one, so events must arrive in
event-time order: the live worker holds events read ahead of another input
topic until the watermark reaches them (:mod:`models.reorder`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

from models.audiences import (
    AUDIENCE_PREFIX,
    answering_traits,
    audience_context,
    audience_dimensions,
    backfilling_audiences,
    backfilling_traits,
    evaluate_moved,
    metrics,
    moved_traits,
    note_next_change,
    nothing_due,
    read_metrics,
    reads_scores,
    reads_windows,
    sync_traits,
    synced_digest,
)
from models.churn_features import model_inputs
from models.clv import new_bgnbd, simple_clv
from models.definitions import Context, Definitions
from models.features import FEATURES
from models.ids import keyed_id
from models.profile import DAY_MS, Profile, ProfileConfig, cart_episodes, net_revenue
from models.profile_summary import nps_category
from models.quantiles import (
    RfmValues,
    new_sketch,
    note_population_repair,
    quintile_score,
    rfm_ranks,
    sketch_add,
    sketch_discard,
    sketch_rank,
)
from models.state import PendingSegment, PopulationState, SegmentMembership, SegmentPopulation

DIMENSIONS: Final = (
    "lifecycle",
    "rfm_segment",
    "engagement",
    "loyalty",
    "value_tier",
    "churn_risk",
    "nps_category",
    "preferred_channel",
    "persona",
)
# Dimensions that follow facts (an order, a survey answer) change at once.
NO_DWELL: Final = frozenset({"lifecycle", "nps_category"})
TRIGGER_KINDS: Final = (
    "cart_abandoned",
    "win_back",
    "churn_alert",
    "nps_detractor",
    "negative_feedback",
    "vip",
    "sla_breach",
    "welcome_back",
)
# Entering these segments fires a trigger, the first assignment included.
_ENTRY_TRIGGERS: Final[Mapping[tuple[str, str], str]] = {
    ("lifecycle", "dormant"): "win_back",
    ("lifecycle", "reactivated"): "welcome_back",
    ("churn_risk", "high"): "churn_alert",
    ("value_tier", "top_5"): "vip",
}
_MAX_NOTIFIED_TICKETS: Final = 32
# A change record's reason, or what writes it: most decisions change nothing,
# so the text is written only for a record.
Reason: TypeAlias = str | Callable[[], str]
# When a silent customer's segments are decided again, in days after their
# last event: a day after it (so the day's later sessions are counted in
# engagement and loyalty, the only dimensions decided then), then
# weekly to 13 weeks and every 4 weeks to two years — the model's quiet ticks
# (models.moments), so both wake the customer at once. Bounds how stale
# segments can be, at 36 decisions per silence at most.
REFRESH_DAYS: Final = (1, *range(7, 92, 7), *range(91 + 28, 731, 28))
_REFRESH_MS: Final = tuple(d * DAY_MS for d in REFRESH_DAYS)


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Thresholds of the segment rules and triggers (all come from :class:`Settings`)."""

    new_days: float = 30.0
    at_risk_days: float = 30.0
    dormant_days: float = 60.0
    churned_days: float = 90.0
    reactivated_days: float = 30.0
    heavy_sessions_30d: int = 8
    medium_sessions_30d: int = 3
    loyal_orders_90d: int = 2
    engaged_sessions_30d: int = 4
    top_5_rank: float = 0.95
    top_20_rank: float = 0.80
    churn_high_enter: float = 0.7
    churn_high_leave: float = 0.6
    churn_medium_enter: float = 0.4
    churn_medium_leave: float = 0.3
    min_dwell_ms: int = DAY_MS
    trigger_interval_ms: int = DAY_MS
    # At most this many triggers of any kinds per customer in 24 hours of
    # event time; 0: no cap
    trigger_daily_cap: int = 3
    negative_text: float = -0.5
    expected_lifespan_years: float = 3.0


# --- the dimensions, one pure function each --------------------------------------


def lifecycle_stage(
    profile: Profile, now_ms: int, previous: str | None, config: SegmentConfig
) -> tuple[str, str]:
    """Lifecycle stage and the rule behind it.

    >>> p = {"first_order_ms": 0, "last_order_ms": 0, "lifecycle_returned_ms": None}
    >>> lifecycle_stage(p, 65 * DAY_MS, "at_risk", SegmentConfig())
    ('dormant', 'days_since_order=65.0 >= 60.0')
    """
    first, last = profile["first_order_ms"], profile["last_order_ms"]
    if first is None or last is None:  # set together, at the first order
        return "prospect", "no order yet"
    gap = (now_ms - last) / DAY_MS
    returned = profile.get("lifecycle_returned_ms")
    if gap >= config.churned_days:
        return "churned", f"days_since_order={gap:.1f} >= {config.churned_days}"
    if gap >= config.dormant_days:
        return "dormant", f"days_since_order={gap:.1f} >= {config.dormant_days}"
    if gap >= config.at_risk_days:
        return "at_risk", f"days_since_order={gap:.1f} >= {config.at_risk_days}"
    if returned is not None and (now_ms - returned) / DAY_MS < config.reactivated_days:
        return "reactivated", "ordered again after being dormant or churned"
    if (now_ms - first) / DAY_MS < config.new_days:
        return "new", f"first order {(now_ms - first) / DAY_MS:.1f} days ago"
    return "active", f"days_since_order={gap:.1f} < {config.at_risk_days}"


def rfm_segment(r: int, f: int, m: int) -> str:
    """The common R×F segment map, with Lost for the lowest R and low F and M.

    >>> [rfm_segment(*s) for s in ((5, 5, 5), (5, 1, 1), (2, 5, 3), (1, 1, 1), (1, 2, 3))]
    ['Champions', 'New Customers', "Can't Lose Them", 'Lost', 'Hibernating']
    """
    if r == 1 and f <= 2 and m <= 2:
        return "Lost"
    if r == 5 and f >= 4:
        return "Champions"
    if r in (3, 4) and f >= 4:
        return "Loyal Customers"
    if r >= 4 and f in (2, 3):
        return "Potential Loyalists"
    if r == 5 and f == 1:
        return "New Customers"
    if r == 4 and f == 1:
        return "Promising"
    if r == 3 and f == 3:
        return "Need Attention"
    if r == 3:
        return "About to Sleep"
    if f == 5:
        return "Can't Lose Them"
    if f in (3, 4):
        return "At Risk"
    return "Hibernating"


def engagement_level(sessions_30d: int, config: SegmentConfig) -> str:
    """Heavy, medium, light or inactive by sessions in the last 30 days."""
    if sessions_30d >= config.heavy_sessions_30d:
        return "heavy"
    if sessions_30d >= config.medium_sessions_30d:
        return "medium"
    return "light" if sessions_30d >= 1 else "inactive"


def loyalty_quadrant(orders_90d: int, sessions_30d: int, config: SegmentConfig) -> str:
    """Purchase frequency × engagement.

    >>> loyalty_quadrant(3, 1, SegmentConfig()), loyalty_quadrant(0, 9, SegmentConfig())
    ('passive_loyal', 'chaser')
    """
    buys = orders_90d >= config.loyal_orders_90d
    engages = sessions_30d >= config.engaged_sessions_30d
    if buys:
        return "active_loyal" if engages else "passive_loyal"
    return "chaser" if engages else "drop_off"


def value_tier(rank: float | None, config: SegmentConfig) -> str:
    """Top 5 %, top 20 % or the rest, by the customer's CLV rank among buyers."""
    if rank is None:
        return "rest"
    if rank >= config.top_5_rank:
        return "top_5"
    return "top_20" if rank >= config.top_20_rank else "rest"


def churn_risk_band(
    probability: float, previous: str | None, config: SegmentConfig, lifecycle: str | None = None
) -> str:
    """Low, medium or high, with hysteresis: a band is left only past its leave
    threshold. A customer the lifecycle calls ``churned`` (no order for
    ``churned_days``) is at least medium, whatever the score.

    >>> c = SegmentConfig()
    >>> churn_risk_band(0.65, "high", c), churn_risk_band(0.65, "medium", c)
    ('high', 'medium')
    >>> churn_risk_band(0.1, "low", c, "churned")
    'medium'
    """
    if probability >= config.churn_high_enter or (
        previous == "high" and probability >= config.churn_high_leave
    ):
        return "high"
    if (
        probability >= config.churn_medium_enter
        or (previous in ("medium", "high") and probability >= config.churn_medium_leave)
        or lifecycle == "churned"
    ):
        return "medium"
    return "low"


def customer_clv(profile: Profile, now_ms: int, config: SegmentConfig) -> float | None:
    """Simple CLV (AOV × orders per year × lifespan), as in the profile summary."""
    orders = int(profile["totals"].get("orders", 0))
    if not orders or profile["first_order_ms"] is None:
        return None
    aov = net_revenue(profile["totals"]) / orders
    tenure_days = (now_ms - profile["first_order_ms"]) / DAY_MS
    per_year = orders / max(tenure_days, 30.0) * 365
    return simple_clv(aov, per_year, config.expected_lifespan_years)


def new_segment_population() -> SegmentPopulation:
    """Per partition: members per dimension and value, and the CLV sketch of buyers."""
    return {"counts": {}, "clv": new_sketch("log")}


# --- deciding, publishing, triggering ------------------------------------------------


class _Scored(NamedTuple):
    """What a decision reads of the model and the windows as of its time."""

    inputs: dict[str, float]  # the model's inputs (models.churn_features.model_inputs)
    scores: dict[str, Any]  # the model's outputs (ModelBundle.score)
    snapshot: dict[str, Any]  # the scores a change record carries
    clv: float | None
    rfm: tuple[int, int, int] | None  # R, F and M quintile scores
    built_in: Mapping[str, Any] | None  # the metrics an audience reads (with definitions)


# An evaluation of the audiences (Segmenter._audience_members): the members,
# the context read, the traits that moved and the audiences evaluated again.
_Evaluated: TypeAlias = tuple[dict[str, bool], Context, set[str] | None, list[str] | None]


@dataclass
class Segmenter:
    """Decides a customer's segments and collects the changes and triggers.

    Parameters
    ----------
    config
        Segment thresholds.
    profile_config
        Settings the profiles were built with.
    scorer
        Scores a feature vector (churn probability, persona).
    id_key
        Key of the hash behind change and trigger ids.
    """

    config: SegmentConfig
    profile_config: ProfileConfig
    scorer: Any
    id_key: bytes
    # A backfilled customer's moments before this (wall clock less
    # SEGSTREAM_HISTORICAL_AFTER_HOURS) are historical: their changes are
    # marked so and their triggers are not sent. None: nothing is historical.
    historical_before_ms: int | None = None
    # The user's traits and audiences (models.definitions); None: none defined.
    definitions: Definitions | None = None
    # For checks: evaluate every audience at every decision, instead of only
    # those whose inputs can have moved (the outcome is the same).
    evaluate_every_audience: bool = False
    # For checks: decide the audiences again at every edge of a trait's
    # window, not only where one can move (the audiences' moves are the same).
    decide_at_every_edge: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    # kinds of the triggers not sent because their moment was historical
    withheld: list[str] = field(default_factory=list)
    # kinds of the triggers not sent because the customer's daily cap was reached
    capped: list[str] = field(default_factory=list)

    # -- when --------------------------------------------------------------------

    def before_event(
        self,
        customer_id: str,
        profile: Profile,
        ts: int,
        population: PopulationState,
        filed_ms: int | None = None,
    ) -> None:
        """Decide at every deadline of the customer that falls before ``ts``.

        ``filed_ms`` is the customer's next deadline as filed after their
        state last changed (``profile["deadline_ms"]``), given while the state
        is still as it was then: none of the segments' deadlines falls before
        it, so when it is at or after ``ts`` nothing is computed.
        """
        if filed_ms is not None and filed_ms >= ts:
            return
        self.on_deadline(customer_id, profile, ts - 1, population)

    def after_event(
        self,
        customer_id: str,
        profile: Profile,
        event: Mapping[str, Any],
        population: PopulationState,
        new_day: bool,
    ) -> None:
        """Decide after an event that can move a segment.

        Stitched browsing (anonymous history re-keyed at login) changes the
        profile but is no decision point: the worker reads it after a round
        trip through Kafka, later than the customer's next events, so deciding
        at it would make live transitions depend on that delay.
        """
        if event.get("stitched"):
            return
        if event["topic"] == "purchases" and event["type"] == "order":
            self._note_return(profile, int(event["ts"]))
        ts = int(event["ts"])
        if (
            new_day
            or event["topic"] != "clickstream"
            or event["type"] == "track"  # the shop's own event: a fact, decided at once
            or "segments" not in profile
        ):
            self.decide(customer_id, profile, ts, population)

    def on_deadline(
        self, customer_id: str, profile: Profile, now_ms: int, population: PopulationState
    ) -> int | None:
        """Decide at each of the customer's due times up to ``now_ms``, in order;
        return the next due time (:meth:`next_deadline` of the state left)."""
        built_in: tuple[int | None, int | None] | None = None
        for _ in range(16):  # a bounded number of thresholds can pass at once
            if built_in is None:
                built_in = self._built_in_due(profile)
            due, kind = self._next(profile, built_in=built_in)
            if due is None or due > now_ms:
                return due
            if kind == "audiences":
                # (It leaves the built-in due times as they were.)
                self._decide_audiences_only(customer_id, profile, due, population)
                continue
            built_in = None
            if kind == "windows":
                self._decide_windows(customer_id, profile, due, population)
            else:
                self.decide(customer_id, profile, due, population)
        return self.next_deadline(profile)

    def next_deadline(self, profile: Profile) -> int | None:
        """The next event time at which a decision could change with no new event."""
        return self._next(profile)[0]

    def next_full_decision(self, profile: Profile) -> int | None:
        """The next event time at which every dimension is decided with no new event
        (a due time that is not only a window edge or the day-after refresh)."""
        return self._built_in_due(profile, full_only=True)[0]

    def _next(
        self, profile: Profile, built_in: tuple[int | None, int | None] | None = None
    ) -> tuple[int | None, str]:
        """The next due time, and what is due then: ``windows`` (engagement and
        loyalty only), ``audiences`` (the user's audiences only) or ``full``.

        ``built_in``: :meth:`_built_in_due` of the profile as it stands, when
        the caller has it. At the same time as a window edge, the audiences
        are decided after the windows (:meth:`_decide_windows`).
        """
        decided = profile.get("segments_decided_ms")
        if decided is None:
            return None, "full"
        full, light = self._built_in_due(profile) if built_in is None else built_in
        audiences_due = None
        if self.definitions is not None:
            noted = profile.get("audiences_due_ms")  # a held-back move's end included
            if noted is not None and noted > decided:
                audiences_due = noted
            if "audiences_held" not in profile:  # noted by an earlier release, without
                for dim, membership in profile.get("segments", {}).items():
                    if "pending" in membership and dim.startswith(AUDIENCE_PREFIX):
                        # An audience's dwell ends in an audiences decision.
                        applies = membership["pending"]["applies_ms"]
                        if applies > decided and (audiences_due is None or applies < audiences_due):
                            audiences_due = applies
        due = min((t for t in (full, light, audiences_due) if t is not None), default=None)
        if due is None or due == full:
            return due, "full"
        return due, "windows" if due == light else "audiences"

    def _built_in_due(
        self, profile: Profile, full_only: bool = False
    ) -> tuple[int | None, int | None]:
        """The next due times of the built-in dimensions: when every one is
        decided (``full``), and when only engagement and loyalty are
        (``light``; ``None`` with ``full_only``). A definitions file never
        moves them.

        Window edges and the refresh a day after the last event move only the
        30-day session and 90-day order counts: at them, engagement and loyalty
        are decided (:meth:`_decide_windows`); the scores, ranks and the
        dimensions they drive wait for the next full decision (the weekly
        refresh at the latest), as they would between two events.
        """
        decided = profile.get("segments_decided_ms")
        if decided is None:
            return None, None
        c = self.config
        candidates: list[float] = []  # decided in full
        windows: list[float] = []  # engagement and loyalty only
        first, last = profile["first_order_ms"], profile["last_order_ms"]
        if first is not None and last is not None:
            candidates += [last + d * DAY_MS for d in (c.at_risk_days, c.dormant_days)]
            candidates.append(last + c.churned_days * DAY_MS)
            candidates.append(first + c.new_days * DAY_MS)
        returned = profile.get("lifecycle_returned_ms")
        if returned is not None:
            candidates.append(returned + c.reactivated_days * DAY_MS)
        adds = profile["cart_adds"]
        if adds:
            candidates.append(adds[0] + self.profile_config.cart_timeout_ms)
        if not full_only:
            edge = _next_window_edge(profile, c, decided)
            if edge is not None:
                windows.append(edge)
        last_seen = profile["last_seen_ms"]
        if last_seen is not None:
            # The first refresh at or after the last decision (the first full one).
            i = bisect_left(_REFRESH_MS, decided - last_seen)
            if i == 0 and full_only:
                i = 1
            if i < len(_REFRESH_MS):
                (windows if i == 0 else candidates).append(last_seen + _REFRESH_MS[i])
        held = profile.get("segments", {})
        for dim in DIMENSIONS:  # (not the audiences' entries, which can be many)
            membership = held.get(dim)
            if membership is not None and "pending" in membership:
                candidates.append(membership["pending"]["applies_ms"] - 1)
        if profile["open_tickets"]:
            notified = set(profile.get("sla_notified", []))
            for ticket, (opened, priority) in profile["open_tickets"].items():
                if ticket not in notified:
                    candidates.append(opened + self._sla_ms(priority))
        return _first_after(candidates, decided), _first_after(windows, decided)

    def _decide_audiences_only(
        self, customer_id: str, profile: Profile, now_ms: int, population: PopulationState
    ) -> None:
        """Only the user's audiences are due (a trait's window dropped a day, a
        ``days_since`` threshold passed, a windowed count an audience reads
        moved): evaluated against the segments as they stand. Where one moves,
        its change record carries the scores of the latest full decision,
        which those segments stand on (``scores.as_of_ms``; the model is
        scored here only where an audience reads a score); the built-in
        dimensions are left to their own decision points, so a definitions
        file never moves them (nor the time of their decisions)."""
        definitions = self.definitions
        assert definitions is not None  # noqa: S101 - only filed with definitions
        now_ms = max(now_ms, profile.get("segments_decided_ms") or now_ms)
        evaluated: _Evaluated | None = None
        if not reads_scores(definitions):  # (else scored first: the conditions read them)
            current = profile.get("segments", {})
            sessions_30d, orders_90d, clv = 0, 0, None  # worked out where an audience reads them
            read = read_metrics(definitions)
            if "sessions_30d" in read or "orders_90d" in read:
                sessions_30d, orders_90d = _recent_sessions_and_orders(profile, now_ms)
            if "clv" in read:
                clv = customer_clv(profile, now_ms, self.config)
            built_in = metrics(profile, now_ms, sessions_30d, orders_90d, clv)
            evaluated = self._audience_members(profile, now_ms, built_in, {}, current)
            members, context, moved, again = evaluated
            renewed = profile.get("audiences_digest") != definitions.digest
            # Audiences removed from the definitions leave (a renewed file only).
            left = renewed and any(
                dim.startswith(AUDIENCE_PREFIX) and dim[len(AUDIENCE_PREFIX) :] not in members
                for dim in current
            )
            # (An audience not evaluated again holds as it was.)
            evaluated_names = list(members) if again is None else again
            dimensions = audience_dimensions(definitions)
            entries = [current.get(dimensions[name]) for name in evaluated_names]
            if not left and all(
                (entry is not None and entry["value"] == "in") == members[name]
                for name, entry in zip(evaluated_names, entries, strict=True)
            ):
                for entry in entries:
                    if entry is not None:
                        entry.pop("pending", None)  # the held-back change no longer holds
                note_next_change(
                    profile,
                    definitions,
                    context,
                    moved,
                    members,
                    self.decide_at_every_edge,
                    evaluated_names,
                )
                return
        decided = profile.get("scores_decided")
        if evaluated is not None and decided is not None:
            # One moves: its change record carries the scores of the latest
            # full decision (those the built-in segments held now stand on),
            # with the time they are as of.
            as_of, version, snapshot = decided
            self._decide_audiences(
                customer_id,
                profile,
                now_ms,
                population,
                {**snapshot, "as_of_ms": as_of},
                {"model_version": version},
                evaluated[1].metrics,
                evaluated=evaluated,
            )
            return
        # They read scores (or no full decision noted its scores): scored now.
        scored = self._scored(profile, now_ms, population)
        assert scored.built_in is not None  # noqa: S101 - with definitions
        self._decide_audiences(
            customer_id,
            profile,
            now_ms,
            population,
            scored.snapshot,
            scored.scores,
            scored.built_in,
            evaluated=evaluated,
        )

    def _audience_members(
        self,
        profile: Profile,
        now_ms: int,
        built_in: Mapping[str, Any],
        scores: Mapping[str, Any],
        current: Mapping[str, SegmentMembership],
        segments_moved: Iterable[str] = (),
    ) -> _Evaluated:
        """The customer's audiences as of ``now_ms``, evaluating again only
        those whose inputs can have moved (all with
        ``evaluate_every_audience``, or on a profile an earlier release
        noted): the members, the context they were read from, the traits
        that moved and the audiences evaluated again (``None``: all).
        ``segments_moved``: the built-in dimensions this decision moved."""
        definitions = self.definitions
        assert definitions is not None  # noqa: S101 - the callers checked
        if profile.get("trait_digest") != synced_digest(definitions):
            sync_traits(profile, definitions, max(self.profile_config.windows_days))
        context = audience_context(profile, definitions, now_ms, built_in, scores, current)
        moved = None
        if not self.evaluate_every_audience and "audience_flips" in profile:
            moved = moved_traits(profile, definitions, now_ms)
        # Of those, the traits whose move can change an answer.
        noted = profile.get("trait_bands")
        answering, bands = answering_traits(definitions, context.traits, moved, noted)
        if bands is not noted:
            profile["trait_bands"] = bands
        members, context, again = evaluate_moved(
            definitions,
            context,
            current,
            answering,
            profile.get("audiences_held"),
            segments_moved,
            profile.get("events_moved") or (),
            profile.get("audience_flips"),
        )
        return members, context, moved, again

    def _decide_windows(
        self, customer_id: str, profile: Profile, now_ms: int, population: PopulationState
    ) -> None:
        """Decide engagement, loyalty and the preferred channel as of ``now_ms``:
        where one moves, every dimension is decided (the change records carry
        the scores). Otherwise the user's audiences follow where they read the
        windowed counts or are due at this moment too
        (:meth:`_decide_audiences_only`)."""
        c = self.config
        now_ms = max(now_ms, profile.get("segments_decided_ms") or now_ms)
        current = profile.get("segments", {})
        sessions_30d, orders_90d = _recent_sessions_and_orders(profile, now_ms)
        levels = {
            "engagement": engagement_level(sessions_30d, c),
            "loyalty": loyalty_quadrant(orders_90d, sessions_30d, c),
            # The day's later clicks can move it too.
            "preferred_channel": _preferred(profile["channels"]),
        }
        if any(
            v is not None and (dim not in current or current[dim]["value"] != v)
            for dim, v in levels.items()
        ):
            self.decide(customer_id, profile, now_ms, population)
            return
        profile["segments_decided_ms"] = now_ms
        for dim in levels:
            if dim in current:
                current[dim].pop("pending", None)  # the held-back change no longer holds
        definitions = self.definitions
        if definitions is not None:
            due = profile.get("audiences_due_ms")
            if reads_windows(definitions) or (due is not None and due <= now_ms):
                # The windowed counts an audience reads moved, or the audiences
                # are due at this edge too.
                self._decide_audiences_only(customer_id, profile, now_ms, population)

    # -- what --------------------------------------------------------------------

    def decide(
        self, customer_id: str, profile: Profile, now_ms: int, population: PopulationState
    ) -> None:
        """Decide every dimension as of ``now_ms``; record changes and triggers."""
        c = self.config
        now_ms = max(now_ms, profile.get("segments_decided_ms") or now_ms)
        profile["segments_decided_ms"] = now_ms
        current: dict[str, SegmentMembership] = profile.setdefault("segments", {})
        scored = self._scored(profile, now_ms, population)
        inputs, scores, snapshot, clv, rfm = (
            scored.inputs,
            scored.scores,
            scored.snapshot,
            scored.clv,
            scored.rfm,
        )
        sessions_30d, orders_90d = snapshot["sessions_30d"], snapshot["orders_90d"]
        clv_rank = self._clv_rank(profile, clv, population)
        churn_p = snapshot["churn_probability"]
        prev = {dim: current[dim]["value"] if dim in current else None for dim in DIMENSIONS}
        stage = lifecycle_stage(profile, now_ms, prev["lifecycle"], c)
        # Each value with its reason, worked out only for a change record.
        decided: dict[str, tuple[str | None, Reason]] = {
            "lifecycle": stage,
            "rfm_segment": (
                (rfm_segment(*rfm), lambda: f"R={rfm[0]} F={rfm[1]} M={rfm[2]}")
                if rfm
                else (None, "no order yet")
            ),
            "engagement": (
                engagement_level(sessions_30d, c),
                lambda: f"sessions_30d={sessions_30d}",
            ),
            "loyalty": (
                loyalty_quadrant(orders_90d, sessions_30d, c),
                lambda: f"orders_90d={orders_90d} sessions_30d={sessions_30d}",
            ),
            "value_tier": (
                (value_tier(clv_rank, c), lambda: f"clv={clv:.2f} rank={clv_rank:.3f}")
                if clv is not None and clv_rank is not None
                else (None, "no order yet")
            ),
            "churn_risk": (
                (
                    churn_risk_band(churn_p, prev["churn_risk"], c, stage[0]),
                    lambda: "churn_probability={:.3f}; {}{}".format(
                        churn_p,
                        ", ".join(r["feature"] for r in scores["churn_explanation"]) or "prior",
                        "; lifecycle churned: at least medium" if stage[0] == "churned" else "",
                    ),
                )
                if churn_p is not None
                else (None, "no order yet")
            ),
            "nps_category": (nps_category(profile["nps_last"]), "latest NPS answer"),
            "preferred_channel": (_preferred(profile["channels"]), "most interactions"),
            "persona": (
                settled_persona(profile, prev["persona"], inputs, scores["persona"], self.scorer),
                lambda: f"nearest centroid: cluster {scores['cluster_id']}",
            ),
        }
        changed = len(self.changes)
        for dim in DIMENSIONS:
            self._apply(
                customer_id, profile, dim, decided[dim], now_ms, population, snapshot, scores
            )
        if scored.built_in is not None:
            # The scores an audiences decision before the next full one carries.
            profile["scores_decided"] = [now_ms, scores["model_version"], snapshot]
            # The dimensions that moved: each move is one change record.
            moved = [change["dimension"] for change in self.changes[changed:]]
            self._decide_audiences(
                customer_id, profile, now_ms, population, snapshot, scores, scored.built_in, moved
            )
        if "persona" in current and current["persona"]["value"] == scores["persona"]:
            # The persona held agrees with the customer's cluster: a later
            # move is judged against where the customer stands now.
            profile["persona_anchor"] = [inputs[name] for name in FEATURES]
        self._fact_triggers(customer_id, profile, now_ms, snapshot)

    def _scored(self, profile: Profile, now_ms: int, population: PopulationState) -> _Scored:
        """The model's scores and what a change record carries as of ``now_ms``
        (:class:`_Scored`); nothing is changed."""
        bgnbd = population["bgnbd"] if "bgnbd" in population else new_bgnbd()
        inputs = model_inputs(profile, self.profile_config, now_ms, bgnbd, self.scorer.horizon_days)
        scores = self.scorer.score(inputs)
        sessions_30d, orders_90d = _recent_sessions_and_orders(profile, now_ms)
        clv = customer_clv(profile, now_ms, self.config)
        ranks = None
        if profile["last_order_ms"] is not None and "rfm" in population:
            values = RfmValues(
                profile["last_order_ms"] // DAY_MS,
                int(profile["totals"].get("orders", 0)),
                net_revenue(profile["totals"]),
            )
            ranks = rfm_ranks(population["rfm"], values)
        rfm = (
            (quintile_score(ranks[0]), quintile_score(ranks[1]), quintile_score(ranks[2]))
            if ranks
            else None
        )
        churn_p = scores["churn_probability"] if profile["last_order_ms"] is not None else None
        snapshot = {
            "churn_probability": churn_p,
            "cluster_id": scores["cluster_id"],
            "rfm": "".join(map(str, rfm)) if rfm else None,
            "clv": round(clv, 2) if clv is not None else None,
            "sessions_30d": sessions_30d,
            "orders_90d": orders_90d,
        }
        built_in = None
        if self.definitions is not None:
            built_in = metrics(profile, now_ms, sessions_30d, orders_90d, clv)
        return _Scored(inputs, scores, snapshot, clv, rfm, built_in)

    def _apply(
        self,
        customer_id: str,
        profile: Profile,
        dim: str,
        decision: tuple[str | None, Reason],
        now_ms: int,
        population: PopulationState,
        snapshot: dict[str, Any],
        scores: Mapping[str, Any],
    ) -> None:
        """Move the customer to the value decided in ``dim`` (with its reason)
        unless it holds already or the dwell holds the move back (kept as pending)."""
        value, reason = decision
        current = profile["segments"]
        before = current.get(dim)
        if value is None:
            return
        if before is not None and value == before["value"]:
            before.pop("pending", None)  # the held-back change no longer holds
            return
        if (
            before is not None
            and dim not in NO_DWELL
            and now_ms - before["since_ms"] < self.config.min_dwell_ms
        ):
            # Too soon after the last move: no flapping. Said so, and decided
            # again when the dwell ends.
            before["pending"] = {
                "value": value,
                "applies_ms": before["since_ms"] + self.config.min_dwell_ms,
            }
            return
        current[dim] = {"value": value, "since_ms": now_ms}
        _count(population, dim, before["value"] if before else None, value)
        if not isinstance(reason, str):
            reason = reason()
        self._change(customer_id, profile, dim, before, value, now_ms, reason, snapshot, scores)

    def _decide_audiences(
        self,
        customer_id: str,
        profile: Profile,
        now_ms: int,
        population: PopulationState,
        snapshot: dict[str, Any],
        scores: Mapping[str, Any],
        built_in: Mapping[str, Any],
        segments_moved: Iterable[str] = (),
        evaluated: _Evaluated | None = None,
    ) -> None:
        """Decide the user's audiences as dimensions ``audience.<name>`` (in or
        out), after the built-in ones they may read; note when they can next
        change with no event. ``evaluated``: the audiences as evaluated at
        ``now_ms`` already (:meth:`_audience_members`, none reading a score);
        ``segments_moved``: the built-in dimensions this decision moved."""
        definitions = self.definitions
        assert definitions is not None  # noqa: S101 - the caller checked
        current = profile["segments"]
        renewed = profile.get("audiences_digest") != definitions.digest
        if evaluated is None:
            if not (renewed or self.evaluate_every_audience) and nothing_due(
                profile, definitions, now_ms, segments_moved
            ):
                return  # (what evaluating them would find)
            evaluated = self._audience_members(
                profile, now_ms, built_in, scores, current, segments_moved
            )
        members, context, moved, again = evaluated
        partial: list[str] | None = None  # audiences reading a backfilling trait
        # Those evaluated again; any other holds as it was. (A copy of the
        # names: the reasons may read memberships not read yet.)
        dimensions = audience_dimensions(definitions)
        for name in list(members) if again is None else again:
            inside = members[name]
            dim = dimensions[name]
            value = "in" if inside else "out"
            held = current.get(dim)
            if held is None and not inside:
                continue  # nobody is told they are not in an audience
            if held is not None and held["value"] == value and "pending" not in held:
                continue  # as it was
            # The reason (the values the condition read) only where it may be published.
            reason = "" if held is not None and held["value"] == value else None
            if reason is None:
                reason = definitions.audiences[name].explain(context)
                if partial is None:
                    partial = backfilling_audiences(
                        definitions, backfilling_traits(profile, definitions, now_ms)
                    )
                if name in partial:
                    reason += " (backfilling: a trait it reads counts only recent history)"
            self._apply(
                customer_id, profile, dim, (value, reason), now_ms, population, snapshot, scores
            )
        for dim in [d for d in current if d.startswith(AUDIENCE_PREFIX)] if renewed else ():
            if dim[len(AUDIENCE_PREFIX) :] not in definitions.audiences:
                # Removed from the definitions: members exit at once (no dwell).
                before = current.pop(dim)
                _count(population, dim, before["value"], None)
                if before["value"] == "in":
                    reason = "audience removed from the definitions"
                    self._change(
                        customer_id, profile, dim, before, "out", now_ms, reason, snapshot, scores
                    )
        note_next_change(
            profile, definitions, context, moved, members, self.decide_at_every_edge, again
        )

    def erase(self, profile: Profile, population: PopulationState) -> None:
        """Take an erased customer out of the population counts and CLV sketch."""
        for dim, state in profile.get("segments", {}).items():
            _count(population, dim, state["value"], None)
        counted = profile.get("clv_counted")
        if counted is not None and "clv" in population:
            if not sketch_discard(population["clv"], counted):
                note_population_repair("clv")

    # -- helpers -----------------------------------------------------------------

    def _sla_ms(self, priority: str) -> int:
        return self.profile_config.sla_resolution_s.get(priority, 259_200) * 1000

    def _note_return(self, profile: Profile, ts: int) -> None:
        lifecycle = profile.get("segments", {}).get("lifecycle")
        if lifecycle is not None and lifecycle["value"] in ("dormant", "churned"):
            profile["lifecycle_returned_ms"] = ts

    def _clv_rank(
        self, profile: Profile, clv: float | None, population: PopulationState
    ) -> float | None:
        sketch = population.setdefault("clv", new_sketch("log"))
        counted = profile.get("clv_counted")
        if counted is not None and not sketch_discard(sketch, counted):
            note_population_repair("clv")
        profile["clv_counted"] = clv
        if clv is None:
            return None
        sketch_add(sketch, clv)
        return sketch_rank(sketch, clv)

    def _historical(self, profile: Profile, now_ms: int) -> bool:
        """A moment of a backfill, long past: record it, message nobody."""
        return (
            self.historical_before_ms is not None
            and now_ms < self.historical_before_ms
            and bool(profile.get("backfilling"))
        )

    def _id(self, *parts: object) -> str:
        return keyed_id(self.id_key, "|".join(map(str, parts)), 32)

    def _change(
        self,
        customer_id: str,
        profile: Profile,
        dim: str,
        before: Mapping[str, Any] | None,
        value: str,
        now_ms: int,
        reason: str,
        snapshot: dict[str, Any],
        scores: Mapping[str, Any],
    ) -> None:
        old = before["value"] if before else None
        change = {
            "change_id": self._id(customer_id, dim, old, value, now_ms),
            "customer_id": customer_id,
            "dimension": dim,
            "from_segment": old,
            "to_segment": value,
            "ts": now_ms,
            "reason": reason,
            "scores": snapshot,
            "model_version": scores["model_version"],
        }
        if old is None:
            change["initial"] = True
        if self._historical(profile, now_ms):
            change["historical"] = True
        self.changes.append(change)
        entered = _ENTRY_TRIGGERS.get((dim, value))
        if entered is not None:
            self._trigger(
                customer_id,
                profile,
                entered,
                now_ms,
                f"entered {dim}={value}: {reason}",
                {
                    "dimension": dim,
                    "from": old,
                    "to": value,
                    "scores": snapshot,
                },
            )

    def _fact_triggers(
        self, customer_id: str, profile: Profile, now_ms: int, snapshot: dict[str, Any]
    ) -> None:
        # Carts abandoned by now, whether or not the profile finalised them yet.
        decided, _ = cart_episodes(
            profile["cart_adds"],
            profile["recent_orders_ms"],
            self.profile_config.cart_timeout_ms,
            now_ms,
        )
        abandoned = int(profile["totals"].get("carts_abandoned", 0)) + sum(
            1 for _, ok in decided if not ok
        )
        if abandoned > profile.get("carts_abandoned_seen", 0):
            profile["carts_abandoned_seen"] = abandoned
            self._trigger(
                customer_id,
                profile,
                "cart_abandoned",
                now_ms,
                "cart abandoned",
                {
                    "cart_timeout_s": self.profile_config.cart_timeout_ms // 1000,
                    "scores": snapshot,
                },
            )
        nps_ms = profile["nps_ms"]
        if (
            nps_ms is not None
            and profile["nps_last"] is not None
            and profile["nps_last"] <= 6
            and nps_ms > profile.get("detractor_seen_ms", -1)
        ):
            profile["detractor_seen_ms"] = nps_ms
            self._trigger(
                customer_id,
                profile,
                "nps_detractor",
                now_ms,
                f"NPS {profile['nps_last']}",
                {
                    "nps": profile["nps_last"],
                    "scores": snapshot,
                },
            )
        text_ms = profile["sentiment_ms"]
        if (
            text_ms is not None
            and profile["sentiment_last"] is not None
            and profile["sentiment_last"] <= self.config.negative_text
            and text_ms > profile.get("negative_text_seen_ms", -1)
        ):
            profile["negative_text_seen_ms"] = text_ms
            self._trigger(
                customer_id,
                profile,
                "negative_feedback",
                now_ms,
                f"negative ticket text (sentiment {profile['sentiment_last']:.2f})",
                {"sentiment": profile["sentiment_last"], "scores": snapshot},
            )
        notified: list[str] = profile.setdefault("sla_notified", [])
        for ticket, (opened, priority) in sorted(profile["open_tickets"].items()):
            if ticket not in notified and now_ms > opened + self._sla_ms(priority):
                notified.append(ticket)
                del notified[:-_MAX_NOTIFIED_TICKETS]
                self._trigger(
                    customer_id,
                    profile,
                    "sla_breach",
                    now_ms,
                    f"{priority} ticket past SLA",
                    {
                        "ticket_id": ticket,
                        "priority": priority,
                        "opened_ms": opened,
                    },
                )

    def _trigger(
        self,
        customer_id: str,
        profile: Profile,
        kind: str,
        now_ms: int,
        reason: str,
        payload: dict[str, Any],
    ) -> None:
        limits: dict[str, int] = profile.setdefault("trigger_last_ms", {})
        if now_ms - limits.get(kind, -(10**15)) < self.config.trigger_interval_ms:
            return  # rate limit per customer and kind
        cap = self.config.trigger_daily_cap
        if cap:
            recent = [t for t in profile.get("trigger_recent_ms", []) if now_ms - t < DAY_MS]
            if len(recent) >= cap:
                self.capped.append(kind)  # across kinds: enough messages for today
                return
            profile["trigger_recent_ms"] = [*recent, now_ms]
        # As if sent, historical or not: state does not depend on the wall clock.
        limits[kind] = now_ms
        if self._historical(profile, now_ms):
            self.withheld.append(kind)
            return
        self.triggers.append(
            {
                "trigger_id": self._id(customer_id, kind, now_ms, reason),
                "customer_id": customer_id,
                "kind": kind,
                "ts": now_ms,
                "reason": reason,
                "payload": payload,
            }
        )


def view_pending(
    profile: Profile,
    scores: Mapping[str, Any],
    rfm: Mapping[str, Any] | None,
    windows: Mapping[str, Mapping[str, Any]],
    config: SegmentConfig,
    full_due: int | None = None,
) -> dict[str, PendingSegment]:
    """Churn band, persona, RFM segment, engagement and loyalty as the numbers
    shown put them now, where they differ from the segments last decided (the
    models learned, the partition's customers moved the RFM quintiles, or the
    customer's sessions of the day came after the day's decision).

    The served profile shows them as ``pending``, applying at the customer's
    next decision (their deadline; for the churn band, persona and RFM
    segment the next full decision, ``full_due``:
    :meth:`Segmenter.next_full_decision`), so its segments never contradict
    the numbers shown beside them.
    """
    current = profile.get("segments", {})
    due = profile.get("deadline_ms")
    pending: dict[str, PendingSegment] = {}

    def differs(dim: str, value: str | None, at: int | None = due) -> None:
        held = current.get(dim)
        if value is None or held is None or held["value"] == value or "pending" in held:
            return
        pending[dim] = {"value": value, "applies_ms": at if at is not None else held["since_ms"]}

    p = scores.get("churn_probability")
    if p is not None and profile["last_order_ms"] is not None and "churn_risk" in current:
        stage = current.get("lifecycle")
        lifecycle = stage["value"] if stage is not None else None
        band = churn_risk_band(p, current["churn_risk"]["value"], config, lifecycle)
        differs("churn_risk", band, full_due)
    differs("persona", scores.get("persona"), full_due)
    if rfm is not None:
        differs("rfm_segment", rfm_segment(int(rfm["r"]), int(rfm["f"]), int(rfm["m"])), full_due)
    if "30d" in windows and "90d" in windows:
        sessions_30d = int(windows["30d"]["sessions"])
        differs("engagement", engagement_level(sessions_30d, config))
        orders_90d = int(windows["90d"]["orders"])
        differs("loyalty", loyalty_quadrant(orders_90d, sessions_30d, config))
    return pending


def settled_persona(
    profile: Profile, held: str | None, x: Mapping[str, float], candidate: str | None, scorer: Any
) -> str | None:
    """The customer's persona: their cluster's (``candidate``), unless only the
    model moved.

    A persona changes only when the customer's own features move across a
    boundary of the current model: when their features at the last settled
    decision (``profile["persona_anchor"]``) and their features now ``x`` fall
    in clusters of different personas. Where both fall in the same persona
    and it differs from the one ``held``, the model moved (a centroid was
    learned or re-placed, or a cluster relabelled), not the customer, so the
    held persona stays.

    >>> class Model:
    ...     def persona_of(self, x): return "b" if x["tenure"] > 0.5 else "a"
    >>> profile = {"persona_anchor": [0.6] + [0.0] * (len(FEATURES) - 1)}
    >>> x = dict.fromkeys(FEATURES, 0.0) | {"tenure": 0.7}
    >>> settled_persona(profile, "a", x, "b", Model())  # model moved: held
    'a'
    >>> settled_persona(profile, "a", x | {"tenure": 0.1}, "a", Model())
    'a'
    >>> profile["persona_anchor"][0] = 0.2  # the customer moved
    >>> settled_persona(profile, "a", x, "b", Model())
    'b'
    """
    anchor = profile.get("persona_anchor")
    if held is None or candidate is None or candidate == held or anchor is None:
        return candidate
    before = scorer.persona_of(dict(zip(FEATURES, anchor, strict=True)))
    return held if before == candidate else candidate


def _first_after(moments: list[float], after_ms: int) -> int | None:
    """The earliest of ``int(t) + 1`` that is after ``after_ms`` (``None``: none is).

    >>> _first_after([5.0, 9, 2], 5), _first_after([5.0], 6)
    (6, None)
    """
    first = None
    for t in moments:
        due = int(t) + 1
        if due > after_ms and (first is None or due < first):
            first = due
    return first


def _next_window_edge(profile: Profile, config: SegmentConfig, after_ms: int) -> int | None:
    """The first moment after ``after_ms`` (the last decision) at which
    engagement or loyalty can change with no event: the 30-day session count
    or the 90-day order count drops below one of their thresholds as
    sessions and orders leave the windows. ``None``: neither count can.

    Counted as :func:`_recent_sessions_and_orders` counts: a day bucket's
    sessions leave at the start of the day 30 days on (orders: 90), an open
    session 30 days after it started. Every such moment is after
    ``after_ms``, and a count of n first drops below its highest threshold
    k <= n, as its (n - k + 1)-th item to leave does.
    """
    sessions: list[tuple[int, int]] = []  # (when it leaves the window, how many)
    orders: list[tuple[int, int]] = []
    # In whole days: a bucket of day d leaves a window of w days at (d + w)
    # days, which is after after_ms exactly when d + w > after_ms // DAY_MS.
    after_day = after_ms // DAY_MS
    for key, bucket in profile["buckets"].items():
        day = int(key)
        if day + 90 <= after_day:
            continue
        n = bucket.get("purchases.order")
        if n:
            orders.append(((day + 90) * DAY_MS, int(n)))
        if day + 30 > after_day:
            n = bucket.get("sessions")
            if n:
                sessions.append(((day + 30) * DAY_MS, int(n)))
    month_ago = after_ms - 30 * DAY_MS
    for session in profile["sessions"]:
        if session["start_ms"] > month_ago:
            sessions.append((session["start_ms"] + 30 * DAY_MS, 1))
    edge = None
    if sessions:
        edge = _falls_below(
            sessions,
            (config.heavy_sessions_30d, config.medium_sessions_30d, config.engaged_sessions_30d, 1),
        )
    if orders:
        loyal = _falls_below(orders, (config.loyal_orders_90d,))
        if loyal is not None and (edge is None or loyal < edge):
            edge = loyal
    return edge


def _falls_below(expiries: list[tuple[int, int]], levels: tuple[int, ...]) -> int | None:
    """The first moment a count of items leaving at the given times drops
    below one of the levels: as its (n - k + 1)-th item leaves, where n is
    the count and k the highest level it reaches (``None``: it reaches none).

    >>> _falls_below([(10, 2), (30, 1), (20, 1)], (1, 3, 9))
    10
    >>> _falls_below([(10, 2), (30, 1), (20, 1)], (4,)), _falls_below([(10, 2)], (3,))
    (10, None)
    >>> _falls_below([(10, 2), (30, 1), (20, 1)], (2,))
    20
    """
    total = 0
    for _, n in expiries:
        total += n
    reached = 0  # the highest level the count reaches
    for k in levels:
        if reached < k <= total:
            reached = k
    if not reached:
        return None
    leaving = total - reached + 1  # items that leave before it drops below
    for leaves, n in sorted(expiries):
        leaving -= n
        if leaving <= 0:
            return leaves
    raise AssertionError("unreachable: the count covers every item")  # pragma: no cover


def _recent_sessions_and_orders(profile: Profile, now_ms: int) -> tuple[int, int]:
    """Sessions in the last 30 days (open ones included) and orders in the last 90."""
    today = now_ms // DAY_MS
    sessions = orders = 0
    for key, bucket in profile["buckets"].items():
        age = today - int(key)
        if 0 <= age < 90:
            orders += int(bucket.get("purchases.order", 0))
            if age < 30:
                sessions += int(bucket.get("sessions", 0))
    sessions += sum(1 for s in profile["sessions"] if now_ms - s["start_ms"] < 30 * DAY_MS)
    return sessions, orders


def _count(population: PopulationState, dim: str, old: str | None, new: str | None) -> None:
    counts: dict[str, dict[str, int]] = population.setdefault("counts", {})
    by_value = counts.setdefault(dim, {})
    if old is not None:
        by_value[old] = by_value.get(old, 0) - 1
        if by_value[old] <= 0:
            del by_value[old]
    if new is not None:
        by_value[new] = by_value.get(new, 0) + 1


def _preferred(counts: Mapping[str, int]) -> str | None:
    return min(counts, key=lambda k: (-counts[k], k)) if counts else None
