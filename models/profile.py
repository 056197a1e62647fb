"""Per-customer profile state, updated one event at a time.

Shaped like a stateful map, ``apply_event(state, event, config) -> (state,
outcome)``; the worker and the offline ``evaluate`` path call exactly this
function, and :mod:`models.profile_summary` turns the state into the metrics
users read. State is plain JSON-able data so it can live in a Faust table.

Time is event time only:

* **Watermark**: the latest event time seen for the customer, on any topic.
* **Windows** are per-customer daily buckets (UTC days) of additive counters,
  kept while the longest window reaches them from the customer's watermark
  (older ones are dropped, so state is bounded however long a worker runs).
  An event counts in its day's bucket whenever it is read, as long as that
  bucket is kept: windows are sums, so they do not depend on the order events
  are read in, on the input watermark or on a crash. Only an event for a day
  no window reaches any more is *late*: it counts in lifetime totals only.
* **Derived episodes** — sessions and carts — are finalised only once the
  input watermark passes their end plus ``allowed_lateness_ms``, so an order
  that arrives a little after the clicks (another topic, another batch) still
  converts them, whatever the arrival order.
* **Duplicates**: per input topic, every event within ``dedup_window_ms``
  of the latest one applied from that topic is remembered by id, so a
  redelivered or replayed event changes nothing, however long the history.
  An older one cannot be told apart from a replay and is not applied: it is
  *stale* (:mod:`models.dedup`).

>>> cfg = ProfileConfig()
>>> day = 86_400_000
>>> order = event("purchases", "order", 10 * day, "e1", amount=10.0)
>>> state, outcome = apply_event(None, order, cfg)
>>> state, outcome = apply_event(state, dict(order), cfg)
>>> outcome, state["lifetime"]["purchases.order"]
('duplicate', 1)
>>> later = event("purchases", "order", 17 * day + 1, "e2", amount=10.0)
>>> state, outcome = apply_event(state, later, cfg)
>>> apply_event(state, dict(order), cfg)[1]  # over a week behind e2: replayed or not?
'stale'
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from models import dedup
from models.state import ClosedSession, OpenSession, RecentOrder, TopicMemory
from models.state import Profile as Profile  # declared in models.state, re-exported

Outcome = Literal["applied", "duplicate", "stale", "late"]
HOUR_MS = 3_600_000
TOPICS = ("clickstream", "purchases", "support")
DAY_MS = 86_400_000
MINUTE_MS = 60_000

# Seconds allowed for first response and resolution, per ticket priority.
DEFAULT_SLA_FIRST_RESPONSE_S = {
    "urgent": 3600,
    "high": 4 * 3600,
    "normal": 24 * 3600,
    "low": 72 * 3600,
}
DEFAULT_SLA_RESOLUTION_S = {
    "urgent": 8 * 3600,
    "high": 24 * 3600,
    "normal": 72 * 3600,
    "low": 7 * 24 * 3600,
}
PAGE_TYPES = frozenset({"page_view", "product_view"})
BROWSE_TYPES = frozenset({"page_view", "product_view", "search", "add_to_cart", "checkout_start"})
MAX_OPEN_TICKETS = 50
MAX_OPEN_SESSIONS = 32
MAX_CLOSED_SESSIONS = 16
MAX_RECENT_ORDERS = 16
MAX_PENDING_CART_ADDS = 64
MAX_CATEGORIES = 50


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """Settings of the profile state (all come from :class:`Settings`)."""

    windows_days: tuple[int, ...] = (1, 7, 30, 90)
    allowed_lateness_ms: int = 6 * 3600 * 1000
    dedup_window_ms: int = 7 * 24 * HOUR_MS
    dedup_capacity: int = 1024
    session_timeout_ms: int = 30 * MINUTE_MS
    cart_timeout_ms: int = 60 * MINUTE_MS
    sla_first_response_s: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_SLA_FIRST_RESPONSE_S)
    )
    sla_resolution_s: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_SLA_RESOLUTION_S)
    )


def event(topic: str, type_: str, ts: int, event_id: str, **fields: Any) -> dict[str, Any]:
    """A minimal event mapping (for examples and tests)."""
    return {"topic": topic, "type": type_, "ts": ts, "event_id": event_id, **fields}


def new_profile() -> Profile:
    """An empty profile."""
    return {
        "first_seen_ms": None,
        "last_seen_ms": None,
        "late_events": 0,
        "lifetime": {},
        "totals": {},
        "buckets": {},
        "channels": {},
        "categories": {},
        "purchase_categories": {},
        "sessions": [],
        "closed_sessions": [],
        "cart_adds": [],
        "first_order_ms": None,
        "last_order_ms": None,
        "recent_orders_ms": [],
        "open_tickets": {},
        "csat_last": None,
        "csat_ms": None,
        "nps_last": None,
        "nps_ms": None,
        "ces_last": None,
        "ces_ms": None,
        "sentiment_last": None,
        "sentiment_ms": None,
        "anonymous_ids": [],
    }


def apply_event(
    state: Profile | None,
    event: Mapping[str, Any],
    config: ProfileConfig,
    sentiment: Callable[[str], float] | None = None,
    input_watermark_ms: int | None = None,
    *,
    seen_checked: bool = False,
) -> tuple[Profile, Outcome]:
    """Fold one decoded event into a customer's profile.

    Parameters
    ----------
    state
        The customer's profile, or ``None`` for a new customer.
    event
        A decoded event as a mapping with ``topic``, ``type``, ``ts`` (epoch
        ms), ``event_id`` and the contract's other fields.
    config
        Window, lateness, dedup, session, cart and SLA settings.
    sentiment
        Text → compound sentiment in [-1, 1] for support texts; ``None``
        skips sentiment.
    input_watermark_ms
        Event time up to which *every* input topic of the customer's
        partition has been read (see ``streams.agents``); sessions and carts
        are finalised against it, so an order read after the clicks around it
        (another topic, consumed later) still counts. ``None`` uses the
        customer's own latest event time.
    seen_checked
        The caller has already asked :func:`seen_outcome` and got ``None``.

    Returns
    -------
    The updated profile and what happened: ``applied``, ``duplicate`` (no
    change), ``stale`` (not applied: too old to tell from a replay, see
    :func:`seen_outcome`) or ``late`` (lifetime only: no window reaches its
    day any more).
    """
    profile = new_profile() if state is None else state
    ts = int(event["ts"])
    seen = None if seen_checked else seen_outcome(profile, event, config)
    if seen is not None:
        return profile, seen
    watermark = profile["last_seen_ms"]
    horizon = watermark if input_watermark_ms is None else input_watermark_ms
    dedup.remember(
        _memory(profile),
        str(event["topic"]),
        str(event["event_id"]),
        ts,
        config.dedup_window_ms,
        config.dedup_capacity,
        identified=bool(event.get("identified_by")),
    )

    topic = event["topic"]
    name = f"{topic}.{event['type']}"
    profile["lifetime"][name] = profile["lifetime"].get(name, 0) + 1
    first = profile["first_seen_ms"]
    profile["first_seen_ms"] = ts if first is None else min(first, ts)
    day = ts // DAY_MS
    # Late only when its day's bucket is gone (see _expire_buckets): how far
    # the watermark ran ahead of this event does not matter, so a backlog, a
    # topic read ahead of another or a restart never drops a window's event.
    closed = watermark is not None and day <= watermark // DAY_MS - max(config.windows_days)
    if closed:
        profile["late_events"] += 1

    add = _Adder(profile, day, closed)
    add(name)
    if topic == "clickstream":
        _apply_click(profile, event, ts, add, config)
    elif topic == "purchases":
        _apply_purchase(profile, event, ts, add, config)
    elif topic == "support":
        _apply_support(profile, event, ts, add, config, sentiment)

    if watermark is None or ts > watermark:
        profile["last_seen_ms"] = ts
        if watermark is None or day > watermark // DAY_MS:
            _expire_buckets(profile, day, max(config.windows_days))
    _finalise_episodes(profile, config, horizon if horizon is not None else ts)
    # Whether the customer's latest event came from a backfill (models.segments).
    if event.get("historical"):
        profile["backfilling"] = True
    else:
        profile.pop("backfilling", None)
    return profile, "late" if closed else "applied"


def seen_outcome(
    state: Profile | None, event: Mapping[str, Any], config: ProfileConfig
) -> Outcome | None:
    """Whether an event must not be applied: ``duplicate``, ``stale`` (see
    :mod:`models.dedup`), or ``None``: new."""
    if state is None:
        return None
    return dedup.seen(
        _memory(state),
        str(event["topic"]),
        str(event["event_id"]),
        int(event["ts"]),
        config.dedup_window_ms,
        identified=bool(event.get("identified_by")),
    )


def _memory(profile: Profile) -> dict[str, TopicMemory]:
    memory = profile.get("dedup")
    if memory is None:
        memory = profile["dedup"] = {}
        if "recent_ids" in profile:
            # State written before the memory: the latest ids, without topics or times.
            recent = profile.pop("recent_ids")
            memory.update(dedup.from_recent_ids(recent, TOPICS, profile["last_seen_ms"] or 0))
    return memory


class _Adder:
    """Adds to a counter in lifetime totals and, unless closed, in the day's bucket."""

    __slots__ = ("bucket", "totals")

    def __init__(self, profile: Profile, day: int, closed: bool) -> None:
        self.totals: dict[str, float] = profile["totals"]
        self.bucket: dict[str, float] | None = (
            None if closed else profile["buckets"].setdefault(str(day), {})
        )

    def __call__(self, name: str, value: float = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + value
        if self.bucket is not None:
            self.bucket[name] = self.bucket.get(name, 0) + value


def _bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by
    if len(counts) > MAX_CATEGORIES:
        # Keep the map bounded: forget the rarest key.
        del counts[min(counts, key=counts.__getitem__)]


def _apply_click(
    profile: Profile, event: Mapping[str, Any], ts: int, add: _Adder, config: ProfileConfig
) -> None:
    type_ = event["type"]
    anonymous_id = event.get("anonymous_id")
    if anonymous_id and anonymous_id not in profile["anonymous_ids"]:
        # Remembered so that erasing the customer also erases the alias.
        profile["anonymous_ids"] = [*profile["anonymous_ids"], anonymous_id][-10:]
    channel = event.get("channel") or "web"
    _bump(profile["channels"], channel)
    add(f"channel.{channel}")
    category = event.get("category")
    if category and type_ in ("product_view", "add_to_cart"):
        _bump(profile["categories"], category)
        add(f"category.{category}")
    if type_ == "add_to_cart":
        # Carts are worked out from adds and orders by event time when they
        # are finalised, whatever order the topics were read in.
        bisect.insort(profile["cart_adds"], ts)
        del profile["cart_adds"][:-MAX_PENDING_CART_ADDS]
    if type_ == "track":
        # The shop's own event: counted by name (bounded), never a session.
        _bump(profile.setdefault("custom_events", {}), event["name"])
        return
    if type_ in ("email_open", "email_click", "app_open", "push_open", "identify"):
        return  # not browsing: no session
    session_id = event.get("session_id") or f"~{ts // config.session_timeout_ms}"
    pages = 1 if type_ in PAGE_TYPES else 0
    closed = next((c for c in profile["closed_sessions"] if c["id"] == session_id), None)
    if closed is not None:
        # A session already counted gets a late event (say, browsing stitched
        # in after a login): amend its counts instead of starting another.
        _amend_closed_session(profile, closed, ts, pages, config)
        return
    session = _session_for(profile, session_id, ts, config)
    session["start_ms"] = min(session["start_ms"], ts)
    session["last_ms"] = max(session["last_ms"], ts)
    session["pages"] += pages
    if pages:
        session["dwell_ms"] += int(event.get("duration_ms") or 0)


def _session_for(profile: Profile, session_id: str, ts: int, config: ProfileConfig) -> OpenSession:
    sessions = profile["sessions"]
    for session in sessions:
        if session["id"] == session_id:
            return session
    session = {"id": session_id, "start_ms": ts, "last_ms": ts, "pages": 0, "dwell_ms": 0}
    sessions.append(session)
    if len(sessions) > MAX_OPEN_SESSIONS:
        oldest = min(sessions, key=lambda s: s["last_ms"])
        sessions.remove(oldest)
        _finalise_session(profile, oldest, config)
    return session


def _amend_closed_session(
    profile: Profile, closed: ClosedSession, ts: int, pages: int, config: ProfileConfig
) -> None:
    keep = max(config.windows_days)
    before_ms = closed["last_ms"] - closed["start_ms"]
    closed["start_ms"] = min(closed["start_ms"], ts)
    closed["last_ms"] = max(closed["last_ms"], ts)
    closed["pages"] += pages
    converted = session_converted(profile, closed, config)
    day = closed["day"]
    _add_to_day(
        profile, day, "session_ms", closed["last_ms"] - closed["start_ms"] - before_ms, keep
    )
    _add_to_day(profile, day, "session_pages", pages, keep)
    if converted and not closed["converted"]:
        _add_to_day(profile, day, "sessions_converted", 1, keep)
    closed["converted"] = converted


def net_revenue(totals: Mapping[str, float]) -> float:
    """Revenue net of refunds, in the base currency: what orders paid less what refunds paid back.

    The stored counter ``revenue`` is the gross (orders only), so a state
    written before refunds were netted reads back right.

    >>> net_revenue({"revenue": 100.0, "refund_amount": 30.0}), net_revenue({})
    (70.0, 0.0)
    """
    return float(totals.get("revenue", 0.0)) - float(totals.get("refund_amount", 0.0))


def base_amount(event: Mapping[str, Any]) -> float:
    """The event's amount in the base currency, as the decoder converted it.

    Events held from before the decoder converted (and hand-built test
    events) carry only ``amount``, which is then taken as the base currency.
    """
    converted = event.get("base_amount")
    return float(event["amount"] if converted is None else converted)


def _apply_purchase(
    profile: Profile, event: Mapping[str, Any], ts: int, add: _Adder, config: ProfileConfig
) -> None:
    amount = base_amount(event)
    if event["type"] == "refund":
        add("refunds")
        add("refund_amount", _link_refund(profile, event, amount, add))
        return
    add("orders")
    add("revenue", amount)
    _remember_order(profile, event, ts, amount)
    if float(event.get("discount") or 0) > 0:
        add("discounted_orders")
    channel = event.get("channel") or "web"
    add(f"order_channel.{channel}")
    for item in event.get("items") or ():
        category = item.get("category")
        if category:
            _bump(profile["purchase_categories"], category, int(item.get("qty") or 1))
    first, last = profile["first_order_ms"], profile["last_order_ms"]
    profile["first_order_ms"] = ts if first is None else min(first, ts)
    profile["last_order_ms"] = ts if last is None else max(last, ts)
    orders: list[int] = profile["recent_orders_ms"]
    bisect.insort(orders, ts)
    del orders[:-MAX_RECENT_ORDERS]


def _remember_order(profile: Profile, event: Mapping[str, Any], ts: int, amount: float) -> None:
    # The latest orders by event time, with what a refund may still pay back.
    orders: list[RecentOrder] = profile.setdefault("recent_orders", [])
    order: RecentOrder = {
        # Every contract order has an order_id; hand-built events may not.
        "order_id": str(event.get("order_id") or event["event_id"]),
        "ts": ts,
        "amount": amount,
        "refunded": 0.0,
        "original_amount": float(event["amount"]),
        "currency": str(event.get("currency") or "EUR"),
    }
    bisect.insort(orders, order, key=lambda o: (o["ts"], o["order_id"]))
    del orders[:-MAX_RECENT_ORDERS]


def _link_refund(profile: Profile, event: Mapping[str, Any], amount: float, add: _Adder) -> float:
    """What a refund takes off revenue: its amount, at most what its order has left.

    A refund whose order is not among the remembered ones (unknown, or older
    than the latest ``MAX_RECENT_ORDERS``) nets out in full and is counted
    as ``refunds_unlinked``; one asking for more than its order has left
    nets out what is left and is counted as ``refunds_capped``.
    """
    order_id = event.get("order_id")
    linked = [o for o in profile.get("recent_orders", ()) if o["order_id"] == order_id]
    if not linked:
        add("refunds_unlinked")
        return amount
    wanted = amount
    for order in linked:
        take = min(wanted, round(order["amount"] - order["refunded"], 2))
        if take > 0:
            order["refunded"] = round(order["refunded"] + take, 2)
            wanted = round(wanted - take, 2)
    if wanted > 0:
        add("refunds_capped")
    return round(amount - wanted, 2)


def _apply_support(
    profile: Profile,
    event: Mapping[str, Any],
    ts: int,
    add: _Adder,
    config: ProfileConfig,
    sentiment: Callable[[str], float] | None,
) -> None:
    type_ = event["type"]
    ticket_id = event.get("ticket_id")
    tickets: dict[str, list[Any]] = profile["open_tickets"]
    if type_ == "ticket_opened" and ticket_id:
        tickets[ticket_id] = [ts, event.get("priority") or "normal"]
        if len(tickets) > MAX_OPEN_TICKETS:
            del tickets[min(tickets, key=lambda t: tickets[t][0])]
    elif type_ == "ticket_resolved":
        opened = tickets.pop(ticket_id, None) if ticket_id else None
        priority = event.get("priority") or (opened[1] if opened else "normal")
        breached = False
        first_response = event.get("first_response_s")
        if first_response is not None:
            add("first_response_s", float(first_response))
            add("first_responses")
            breached |= first_response > config.sla_first_response_s.get(priority, 86400)
        resolution = event.get("resolution_s")
        if resolution is None and opened is not None:
            resolution = (ts - opened[0]) / 1000
        if resolution is not None:
            add("resolution_s", float(resolution))
            add("resolutions")
            breached |= resolution > config.sla_resolution_s.get(priority, 259200)
        if breached:
            add("sla_breaches")
    elif type_ == "csat_response":
        add("csat_sum", float(event["score"]))
        _set_latest(profile, "csat", event["score"], ts)
    elif type_ == "nps_response":
        _set_latest(profile, "nps", event["score"], ts)
    elif type_ == "ces_response":
        add("ces_sum", float(event["score"]))
        _set_latest(profile, "ces", event["score"], ts)
    text = event.get("text")
    if text and sentiment is not None:
        score = sentiment(text)
        add("sentiment_sum", score)
        add("sentiment_texts")
        if score <= -0.5:
            add("negative_texts")
        _set_latest(profile, "sentiment", round(score, 4), ts)


_LatestKey = Literal["csat_last", "nps_last", "ces_last", "sentiment_last"]
_LatestMsKey = Literal["csat_ms", "nps_ms", "ces_ms", "sentiment_ms"]
# Profile keys of each latest answer and its event time (typed, so no f-string keys).
_LATEST: Final[dict[str, tuple[_LatestKey, _LatestMsKey]]] = {
    "csat": ("csat_last", "csat_ms"),
    "nps": ("nps_last", "nps_ms"),
    "ces": ("ces_last", "ces_ms"),
    "sentiment": ("sentiment_last", "sentiment_ms"),
}


def _set_latest(profile: Profile, name: str, value: Any, ts: int) -> None:
    # "Last" means latest by event time, not last read.
    last_key, ms_key = _LATEST[name]
    latest_ms = profile[ms_key]
    if latest_ms is None or ts >= latest_ms:
        profile[last_key], profile[ms_key] = value, ts


def _finalise_episodes(profile: Profile, config: ProfileConfig, watermark: int) -> None:
    horizon = watermark - config.allowed_lateness_ms
    sessions = profile["sessions"]
    for session in [s for s in sessions if s["last_ms"] + config.session_timeout_ms <= horizon]:
        sessions.remove(session)
        _finalise_session(profile, session, config)
    episodes, pending = cart_episodes(
        profile["cart_adds"], profile["recent_orders_ms"], config.cart_timeout_ms, horizon
    )
    if episodes:
        profile["cart_adds"] = pending
        keep = max(config.windows_days)
        for start, converted in episodes:
            day = start // DAY_MS
            _add_to_day(profile, day, "carts_started", 1, keep)
            _add_to_day(
                profile, day, "carts_converted" if converted else "carts_abandoned", 1, keep
            )


def cart_episodes(
    adds: list[int], orders: list[int], timeout_ms: int, until_ms: float
) -> tuple[list[tuple[int, bool]], list[int]]:
    """Carts decided by ``until_ms``, as ``(start, converted)``, and the adds still open.

    A cart starts at an add-to-cart when none is open; later adds join it
    until it ends — at the first order within ``timeout_ms`` of its start
    (converted) or when the timeout passes (abandoned). A cart is decided
    once its start plus the timeout is at or before ``until_ms``: by then
    every add and order that could change it has been read.

    >>> cart_episodes([0, 10, 500, 990], [20], timeout_ms=100, until_ms=1000)
    ([(0, True), (500, False)], [990])
    """
    episodes: list[tuple[int, bool]] = []
    i = 0
    while i < len(adds):
        start = adds[i]
        if start + timeout_ms > until_ms:
            break
        conversion = next((o for o in orders if start <= o <= start + timeout_ms), None)
        end = conversion if conversion is not None else start + timeout_ms
        while i < len(adds) and adds[i] <= end:
            i += 1
        episodes.append((start, conversion is not None))
    return episodes, adds[i:]


def session_converted(profile: Profile, session: Mapping[str, Any], config: ProfileConfig) -> bool:
    """Whether an order fell inside the session (or its timeout after the last click)."""
    end = session["last_ms"] + config.session_timeout_ms
    return any(session["start_ms"] <= ts <= end for ts in profile["recent_orders_ms"])


def _finalise_session(profile: Profile, session: Mapping[str, Any], config: ProfileConfig) -> None:
    day = session["start_ms"] // DAY_MS
    keep = max(config.windows_days)
    converted = session_converted(profile, session, config)
    _add_to_day(profile, day, "sessions", 1, keep)
    _add_to_day(profile, day, "session_ms", session["last_ms"] - session["start_ms"], keep)
    _add_to_day(profile, day, "session_pages", session["pages"], keep)
    if converted:
        _add_to_day(profile, day, "sessions_converted", 1, keep)
    closed = profile["closed_sessions"]
    closed.append(
        {
            "id": session["id"],
            "start_ms": session["start_ms"],
            "last_ms": session["last_ms"],
            "pages": session["pages"],
            "converted": converted,
            "day": day,
        }
    )
    del closed[:-MAX_CLOSED_SESSIONS]


def _add_to_day(profile: Profile, day: int, name: str, value: float, keep_days: int) -> None:
    # Derived episodes are not late data: they go into their day's bucket
    # whenever that day is still inside the longest window.
    totals = profile["totals"]
    totals[name] = totals.get(name, 0) + value
    last_seen = profile["last_seen_ms"]
    if last_seen is not None and last_seen // DAY_MS - day < keep_days:
        bucket = profile["buckets"].setdefault(str(day), {})
        bucket[name] = bucket.get(name, 0) + value


def _expire_buckets(profile: Profile, today: int, keep_days: int) -> None:
    buckets: dict[str, Any] = profile["buckets"]
    oldest = today - keep_days + 1
    for key in [k for k in buckets if int(k) < oldest]:
        del buckets[key]


def window_totals(profile: Profile, days: int, as_of_ms: int | None = None) -> dict[str, float]:
    """Counters summed over the last ``days`` UTC days up to ``as_of_ms``.

    The window ends at ``as_of_ms`` (default: the customer's watermark).
    """
    end = profile["last_seen_ms"] if as_of_ms is None else as_of_ms
    if end is None:
        return {}
    today = end // DAY_MS
    totals: dict[str, float] = {}
    for key, bucket in profile["buckets"].items():
        if today - days < int(key) <= today:
            for name, value in bucket.items():
                totals[name] = totals.get(name, 0) + value
    return totals
