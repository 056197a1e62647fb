"""The state schema: every kind of state the worker keeps, declared in one place.

A worker keeps five kinds of state per input partition, all plain JSON-able
data in Faust tables (and the same dicts in ``segstream evaluate``):

==================  ===================  ==============================================
state               table, key           declared here as
==================  ===================  ==============================================
profile             profiles, customer   :class:`Profile`
population          population, p        :class:`PopulationState`
held events         held, customer       :data:`HeldEvents` (:mod:`models.reorder`)
deadline index      deadlines, see below :data:`DeadlineBucket`, :data:`DeadlineFrom`
identity            identities, anon id  :class:`IdentityState` (:mod:`models.identity`)
==================  ===================  ==============================================

Each key is declared once, with what it holds; the modules that write the
state import their types from here. The declarations describe the JSON the
changelog already holds — nothing here changes what is stored — so a store
written before them reads back unchanged. :func:`undeclared_keys` is the
runtime check the tests run after many random histories: a key written
anywhere without being declared here fails them.

This module deliberately does not use ``from __future__ import annotations``:
with string annotations, Python 3.11's ``TypedDict`` does not see
``NotRequired`` and would report every key as required.
"""

import re
from collections.abc import Mapping
from typing import Any, Final, Literal, NotRequired, TypedDict

from schemas.records import ClickEvent, PurchaseEvent, SupportEvent

# --- profile ------------------------------------------------------------------------


class OpenSession(TypedDict):
    """A browsing session not finalised yet (``Profile.sessions``)."""

    id: str  # session_id of the events, or "~<ts // session timeout>" without one
    start_ms: int  # event time of its first event
    last_ms: int  # event time of its latest event
    pages: int  # page and product views
    dwell_ms: int  # summed duration_ms of those views


class ClosedSession(TypedDict):
    """A finalised session, kept a while so late events amend it (``Profile.closed_sessions``)."""

    id: str  # as in OpenSession
    start_ms: int  # event time of its first event
    last_ms: int  # event time of its latest event
    pages: int  # page and product views
    converted: bool  # an order fell in the session or its timeout
    day: int  # UTC day index (start_ms // DAY_MS) whose bucket counted it


class TopicMemory(TypedDict):
    """Which events of one input topic a profile applied (:mod:`models.dedup`)."""

    through: int  # latest event time applied from the topic
    ids: dict[str, int]  # event id -> event time, of those within the window of `through`
    floor: list[Any] | None  # [ts, event_id]: the memory's start once capacity let ids go


class RecentOrder(TypedDict):
    """An order kept so that refunds link to it (``Profile.recent_orders``)."""

    order_id: str  # order_id of the order event
    ts: int  # its event time
    amount: float  # in the base currency, as counted in revenue
    refunded: float  # base currency paid back by refunds linked to it, at most amount
    original_amount: float  # as paid, in currency
    currency: str  # ISO code of what was paid


class PendingSegment(TypedDict):
    """A segment decided but held back by the minimum dwell time."""

    value: str
    applies_ms: int  # the end of the dwell: the change is decided again then


class SegmentMembership(TypedDict):
    """A customer's current value in one segment dimension (``Profile.segments``)."""

    value: str  # the segment, e.g. "active" or "Champions"
    since_ms: int  # decision time it was entered at (dwell time is measured from it)
    # a change the dwell rule holds back: the value decided, and when it may apply
    pending: NotRequired[PendingSegment]


class ChurnPending(TypedDict):
    """A churn score waiting for its label (``Profile.churn_pending``)."""

    scored_ms: int  # moment (event time) the customer was scored at
    x: list[float]  # values in models.churn_features.CHURN_FEATURES order (names left out)
    p: float  # churn probability given at the moment
    source: str  # which churn model gave it (score's churn_source)
    version: int  # model snapshot version that scored it
    # BG/NBD inputs at the moment, [x, t_x, T] in days: the example's base is
    # worked out again with the fit as it is when the label resolves
    bg: NotRequired[list[float]]
    # 0 once the customer ordered after the moment; the example still waits
    # for the horizon to pass, like every other (see models.moments)
    y: NotRequired[int]


class Profile(TypedDict):
    """One customer's state (:mod:`models.profile` and the modules that decide on it).

    The first block is created by :func:`models.profile.new_profile`; the
    ``NotRequired`` keys are added later in the profile's life, by the module
    named beside them.
    """

    first_seen_ms: int | None  # earliest event time seen
    last_seen_ms: int | None  # latest event time seen: the customer's watermark
    dedup: NotRequired[dict[str, TopicMemory]]  # input topic -> what was applied from it
    # the last 128 event ids, as state written before `dedup` kept them;
    # read once into it (models.dedup.from_recent_ids)
    recent_ids: NotRequired[list[str]]
    late_events: int  # events whose day window had closed (lifetime only)
    lifetime: dict[str, int]  # "<topic>.<type>" -> events, duplicates excluded
    # counter -> lifetime sum (orders, sessions, ...); money in the base currency:
    # "revenue" is what orders paid (gross), "refund_amount" what refunds paid
    # back; net revenue is their difference (models.profile.net_revenue)
    totals: dict[str, float]
    buckets: dict[str, dict[str, float]]  # UTC day index (as str) -> counter -> that day's sum
    channels: dict[str, int]  # click channel -> events (bounded)
    categories: dict[str, int]  # category viewed or added to cart -> events (bounded)
    purchase_categories: dict[str, int]  # category bought -> quantity (bounded)
    sessions: list[OpenSession]  # sessions still open
    closed_sessions: list[ClosedSession]  # the latest finalised sessions
    cart_adds: list[int]  # event times of add_to_cart not yet decided into carts, sorted
    first_order_ms: int | None  # event time of the first order
    last_order_ms: int | None  # event time of the latest order
    recent_orders_ms: list[int]  # event times of the latest orders, sorted
    open_tickets: dict[str, list[Any]]  # ticket_id -> [opened_ms, priority]
    csat_last: float | None  # latest CSAT score, by event time
    csat_ms: int | None  # its event time
    nps_last: float | None  # latest NPS score, by event time
    nps_ms: int | None  # its event time
    ces_last: float | None  # latest CES score, by event time
    ces_ms: int | None  # its event time
    sentiment_last: float | None  # compound sentiment of the latest support text
    sentiment_ms: int | None  # its event time
    anonymous_ids: list[str]  # anonymous ids stitched to the customer (erased with them)
    # models.profile, from the first custom (track) event on
    custom_events: NotRequired[dict[str, int]]  # custom event name -> count (bounded)
    # models.profile, from the first order on
    recent_orders: NotRequired[list[RecentOrder]]  # latest orders with amounts (refund links)
    # models.pipeline
    bgnbd_learned_day: NotRequired[int]  # UTC day index of the last BG/NBD step learned from it
    deadline_ms: NotRequired[int | None]  # due time filed in the deadline index, if any
    # models.moments
    moment_ms: NotRequired[int]  # event time of the latest moment (activity or quiet tick)
    churn_pending: NotRequired[list[ChurnPending]]  # scores waiting for their churn label
    # models.segments
    segments: NotRequired[dict[str, SegmentMembership]]  # dimension -> current membership
    segments_decided_ms: NotRequired[int]  # decision time of the latest segment decision
    # the user's computed traits (models.audiences): trait fingerprint -> state
    traits: NotRequired[dict[str, dict[str, Any]]]
    trait_fps: NotRequired[list[str]]  # the trait fingerprints those states answer for
    # the definitions file they were brought in line with, and the states' layout
    # (models.audiences.synced_digest)
    trait_digest: NotRequired[str]
    # trait fingerprint -> the watermark when a trait the profile's counters
    # could not answer for was added: it counts from then on (backfilling)
    trait_since: NotRequired[dict[str, int]]
    # trait fingerprints folded into since the audiences were last evaluated
    # (models.audiences.moved_traits: only what can have moved is evaluated again)
    traits_moved: NotRequired[list[str]]
    # per trait, in the definitions' order: when it next changes with no
    # event, as worked out at the last evaluation (null: not by time alone)
    trait_due: NotRequired[list[int | None]]
    trait_edge_ms: NotRequired[int | None]  # the first of them (absent: kept by an earlier release)
    # per trait, in the same order: the first of its edges at which an answer
    # can turn (its edge where that is not worked out; -1: to be worked out
    # where a decision needs it, as after an event that kept it in its band;
    # null: none)
    trait_turns: NotRequired[list[int | None]]
    # per trait, in the same order: where its value lay among the numbers the
    # audiences compare it with, at the last evaluation (models.audiences.trait_band;
    # null: not worked out, or read otherwise; absent: kept by an earlier release)
    trait_bands: NotRequired[list[int | None]]
    # per audience with a days_since test, in the definitions' order: when it
    # next flips, as worked out when it was last evaluated (absent: kept by an
    # earlier release, which evaluated such audiences at every decision)
    audience_flips: NotRequired[list[int | None]]
    # topics of the events applied since the audiences were last evaluated,
    # where an audience reads a metric their events move
    events_moved: NotRequired[list[str]]
    # indices (as trait_due's) of the traits that can rise before the next
    # event: a day still to enter the window, a negative amount, a max...
    traits_rising: NotRequired[list[int]]
    audiences_digest: NotRequired[str]  # digest of the file the audiences were last evaluated under
    # when an audience or trait can next change with no event, or a move the
    # dwell holds back applies (at the last decision)
    audiences_due_ms: NotRequired[int | None]
    # the audiences whose move the dwell holds back (their entries' "pending"),
    # as noted at the last decision (absent: kept by an earlier release)
    audiences_held: NotRequired[list[str]]
    # with definitions: the scores the latest full decision's change records
    # carried, as [decision time, model version, scores]; an audiences decision
    # between full decisions carries them too (absent: kept by an earlier
    # release, or no full decision yet: scored at the audiences decision)
    scores_decided: NotRequired[list[Any]]
    # features (models.features.FEATURES order) when the persona held last
    # agreed with the customer's cluster: the persona moves only when the
    # customer's own features do (models.segments.settled_persona)
    persona_anchor: NotRequired[list[float]]
    lifecycle_returned_ms: NotRequired[int]  # event time of an order after dormant/churned
    clv_counted: NotRequired[float | None]  # simple CLV as counted in the population sketch
    carts_abandoned_seen: NotRequired[int]  # abandoned carts already triggered on
    detractor_seen_ms: NotRequired[int]  # event time of the NPS answer last triggered on
    negative_text_seen_ms: NotRequired[int]  # event time of the support text last triggered on
    sla_notified: NotRequired[list[str]]  # ticket ids whose SLA breach was triggered (bounded)
    trigger_last_ms: NotRequired[dict[str, int]]  # trigger kind -> when it last fired (rate limit)
    # event times of the triggers of the last 24 hours (daily cap across kinds)
    trigger_recent_ms: NotRequired[list[int]]
    # present (true) while the latest event applied came from a backfill
    # (`replay --historical`): its old moments are historical (models.segments)
    backfilling: NotRequired[bool]


# --- population ---------------------------------------------------------------------

Binning = Literal["day", "count", "log"]


# Keys that old state may hold and the code reads once and replaces, never writes.
READ_ONLY_PROFILE_KEYS: Final = frozenset({"recent_ids"})


class Sketch(TypedDict):
    """A histogram sketch with exact deletions (:mod:`models.quantiles`)."""

    binning: Binning  # how values map to bins
    n: int  # values counted
    bins: dict[str, int]  # bin key -> values in it (emptied bins are deleted)


class RfmPopulation(TypedDict):
    """RFM sketches of a partition's buyers (:mod:`models.quantiles`)."""

    r: Sketch  # UTC day index of each buyer's last order ("day" binning)
    f: Sketch  # each buyer's lifetime orders ("count" binning)
    m: Sketch  # each buyer's lifetime revenue ("log" binning)


class BgNbdState(TypedDict):
    """BG/NBD population parameters learned so far (:mod:`models.clv`)."""

    log_params: list[float]  # [log r, log alpha, log a, log b]; alpha in days
    steps: int  # learning steps taken


class SegmentPopulation(TypedDict):
    """The population's part kept by :mod:`models.segments`."""

    counts: dict[str, dict[str, int]]  # segment dimension -> value -> members
    clv: Sketch  # simple CLV of buyers ("log" binning), for the value tier


class PopulationState(SegmentPopulation):
    """What one input partition knows about its customer base (:mod:`models.pipeline`)."""

    rfm: RfmPopulation  # for RFM quintile scores
    bgnbd: BgNbdState  # for expected purchases and P(alive)
    # streams (the worker and evaluate)
    watermark_ms: NotRequired[int]  # latest event time applied in the partition
    held_customers: NotRequired[int]  # customers holding events (worker only)


# --- held events, deadlines, identities -----------------------------------------------

# A decoded input record as a dict: the fields of its contract in
# schemas.records (ClickEvent, PurchaseEvent or SupportEvent, through
# msgspec.to_builtins) plus "topic", its role. Those Structs declare the keys.
EventFields = dict[str, Any]
# A customer's events read ahead of the input watermark, in (ts, event_id) order.
HeldEvents = list[EventFields]

# Deadline index entries (models.deadlines), in the deadlines table; the key
# prefix is "" for customers' deadlines and "h" for held events:
# "<prefix><partition>:<bucket>" -> entries due in that bucket of event time.
DeadlineEntry = list[Any]  # [due_ms, customer_id]
DeadlineBucket = list[DeadlineEntry]
# "<prefix><partition>:from" -> the oldest bucket that may hold entries.
DeadlineFrom = int
DEADLINE_KEY: Final = re.compile(r"^h?\d+:(\d+|from)$")


class IdentityState(TypedDict):
    """What is known of one anonymous id (:mod:`models.identity`)."""

    customer_id: str | None  # the customer it was identified as, once it was
    pending: list[EventFields]  # its click events held until then (oldest dropped)


# --- runtime check ------------------------------------------------------------------


# The keys an EventFields may hold: the contracts' fields, and the role.
EVENT_KEYS: Final = frozenset(
    {"topic"}.union(*(s.__struct_fields__ for s in (ClickEvent, PurchaseEvent, SupportEvent)))
)


def _keys(declared: type) -> frozenset[str]:
    return frozenset(declared.__annotations__)


def _extra(value: Mapping[str, Any], declared: type, where: str) -> set[str]:
    return {f"{where}{key}" for key in value if key not in _keys(declared)}


def undeclared_keys(profile: Mapping[str, Any]) -> set[str]:
    """Keys of a profile, and of its fixed-key parts, that :class:`Profile` does not declare.

    Nested keys are named by their path, ``sessions[].key``, ``segments.*.key``.

    >>> from models.profile import new_profile
    >>> profile = new_profile()
    >>> profile["segments"] = {"lifecycle": {"value": "new", "since_ms": 0}}
    >>> undeclared_keys(profile)
    set()
    >>> profile["sessions"].append({"id": "s", "start_ms": 0, "last_ms": 0, "pages": 0,
    ...                             "dwell_ms": 0, "referrer": "x"})
    >>> sorted(undeclared_keys({**profile, "vip": True}))
    ['sessions[].referrer', 'vip']
    """
    extra = _extra(profile, Profile, "")
    for session in profile.get("sessions", ()):
        extra |= _extra(session, OpenSession, "sessions[].")
    for closed in profile.get("closed_sessions", ()):
        extra |= _extra(closed, ClosedSession, "closed_sessions[].")
    for order in profile.get("recent_orders", ()):
        extra |= _extra(order, RecentOrder, "recent_orders[].")
    for pending in profile.get("churn_pending", ()):
        extra |= _extra(pending, ChurnPending, "churn_pending[].")
    for membership in profile.get("segments", {}).values():
        extra |= _extra(membership, SegmentMembership, "segments.*.")
    for memory in profile.get("dedup", {}).values():
        extra |= _extra(memory, TopicMemory, "dedup.*.")
    return extra


def undeclared_population_keys(population: Mapping[str, Any]) -> set[str]:
    """Keys of a population, and of its sketches and BG/NBD state, not declared here.

    >>> from models.pipeline import new_population
    >>> population = new_population()
    >>> undeclared_population_keys(population)
    set()
    >>> population["rfm"]["r"]["max"] = 3
    >>> sorted(undeclared_population_keys({**population, "seen": 1}))
    ['rfm.r.max', 'seen']
    """
    extra = _extra(population, PopulationState, "")
    if "rfm" in population:
        extra |= _extra(population["rfm"], RfmPopulation, "rfm.")
        for dim, sketch in population["rfm"].items():
            extra |= _extra(sketch, Sketch, f"rfm.{dim}.")
    if "clv" in population:
        extra |= _extra(population["clv"], Sketch, "clv.")
    if "bgnbd" in population:
        extra |= _extra(population["bgnbd"], BgNbdState, "bgnbd.")
    return extra


def undeclared_event_keys(events: list[Mapping[str, Any]]) -> set[str]:
    """Keys of held or pending events that no input contract declares (see :data:`EventFields`).

    >>> undeclared_event_keys([{"topic": "purchases", "ts": 1, "event_id": "e", "x": 0}])
    {'x'}
    """
    return {key for event in events for key in event if key not in EVENT_KEYS}


def undeclared_identity_keys(state: Mapping[str, Any]) -> set[str]:
    """Keys of an identity state, and of its pending events, not declared here.

    >>> undeclared_identity_keys({"customer_id": None, "pending": [], "seen": 2})
    {'seen'}
    """
    pending = undeclared_event_keys(state.get("pending", []))
    return _extra(state, IdentityState, "") | {f"pending[].{key}" for key in pending}


def malformed_deadline_entries(store: Mapping[str, Any]) -> set[str]:
    """Keys of a deadlines table whose key or value is not a declared deadline index entry.

    >>> malformed_deadline_entries({"0:from": 3, "0:3": [[310, "c1"]], "h1:4": [[400, "c2"]]})
    set()
    >>> sorted(malformed_deadline_entries({"0:3": [[310]], "x": 1, "0:from": "3"}))
    ['0:3', '0:from', 'x']
    """
    bad = set()
    for key, value in store.items():
        match = DEADLINE_KEY.match(key)
        if match is None:
            bad.add(key)
        elif match.group(1) == "from":
            if not isinstance(value, int):
                bad.add(key)
        elif not all(
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
            for entry in value
        ):
            bad.add(key)
    return bad
