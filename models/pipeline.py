"""One customer's events through state and population updates — shared by the
worker (per batch) and ``segstream evaluate`` (per event).

The *population* is what the engine knows about the customer base of one
input partition: RFM sketches (for quintile scores across the base) and the
BG/NBD parameters (for expected purchases). It lives beside the partition's
profiles, so it moves with the partition on a rebalance and is rebuilt from
the same changelog after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from models.audiences import (
    audience_context,
    audience_dimension,
    backfilling_audiences,
    backfilling_traits,
    fold_traits,
    metrics,
    sync_traits,
    synced_digest,
)
from models.churn_features import CHURN_FEATURES, model_inputs
from models.clv import bgnbd_learn, new_bgnbd
from models.deadlines import DeadlineIndex
from models.definitions import Definitions, evaluate_audiences
from models.features import FEATURES
from models.ids import keyed_id
from models.moments import Moments
from models.profile import (
    DAY_MS,
    Outcome,
    Profile,
    ProfileConfig,
    apply_event,
    net_revenue,
    seen_outcome,
)
from models.profile_summary import Population, ValueConfig, summarise
from models.quantiles import RfmValues, new_rfm_population, rfm_recount
from models.segments import (
    SegmentConfig,
    Segmenter,
    customer_clv,
    new_segment_population,
    settled_persona,
    view_pending,
)
from models.state import BgNbdState
from models.state import PopulationState as PopulationState  # re-exported
from models.training import ModelBundle


def new_population() -> PopulationState:
    """An empty population: RFM sketches and starting BG/NBD parameters."""
    segments = new_segment_population()
    return {
        "rfm": new_rfm_population(),
        "bgnbd": new_bgnbd(),
        "counts": segments["counts"],
        "clv": segments["clv"],
    }


def rfm_values(profile: Profile | None) -> RfmValues | None:
    """The customer's RFM inputs, or ``None`` before a first order."""
    if profile is None or profile["last_order_ms"] is None:
        return None
    return RfmValues(
        last_order_day=profile["last_order_ms"] // DAY_MS,
        orders=int(profile["totals"].get("orders", 0)),
        revenue=net_revenue(profile["totals"]),
    )


def update_customer(
    profile: Profile | None,
    events: Iterable[Mapping[str, Any]],
    population: PopulationState,
    config: ProfileConfig,
    sentiment: Callable[[str], float] | None = None,
    input_watermark_ms: int | None = None,
    customer_id: str = "",
    moments: Moments | None = None,
    segments: Segmenter | None = None,
) -> tuple[Profile | None, list[Outcome]]:
    """Fold a customer's events (in the given order) into profile and population.

    ``input_watermark_ms`` is the partition's input watermark (see
    :func:`models.profile.apply_event`).

    The RFM sketches are updated once, from the customer's values before and
    after all the events; the BG/NBD parameters learn from the customer's
    purchase history at most once per event-time day (see
    :func:`_learn_purchase_process`). With ``moments``, the customer's
    model moments (scoring, churn labels, training examples; see
    :mod:`models.moments`) are taken before each new event and collected there;
    with ``segments``, segments are decided at the customer's decision points
    and deadlines (:mod:`models.segments`), changes and triggers collected there.
    """
    before = rfm_values(profile)
    outcomes: list[Outcome] = []
    definitions = segments.definitions if segments is not None else None
    # What a profile in line with the file notes (sync_traits has nothing to do).
    synced = synced_digest(definitions) if definitions is not None else None
    # The deadline filed after the state last changed holds until an event applies.
    filed = None if profile is None else profile.get("deadline_ms")
    for event in events:
        ts = int(event["ts"])
        last_seen = None if profile is None else profile["last_seen_ms"]
        new_day = last_seen is None or ts // DAY_MS > last_seen // DAY_MS
        refused = seen_outcome(profile, event, config)
        if refused is not None:  # a duplicate, or stale: nothing changes
            outcomes.append(refused)
            continue
        if profile is not None:
            _learn_purchase_process(profile, population, ts)
            if moments is not None:
                moments.before_event(customer_id, profile, event, population)
            if segments is not None:
                segments.before_event(customer_id, profile, ts, population, filed)
                if definitions is not None and profile.get("trait_digest") != synced:
                    # New traits are seeded from the counters before this event counts.
                    sync_traits(profile, definitions, max(config.windows_days))
        profile, outcome = apply_event(
            profile, event, config, sentiment, input_watermark_ms, seen_checked=True
        )
        filed = None
        outcomes.append(outcome)
        if segments is not None and outcome in ("applied", "late"):
            if definitions is not None:
                if profile.get("trait_digest") != synced:
                    keep = max(config.windows_days)
                    sync_traits(profile, definitions, keep, fresh=last_seen is None)
                fold_traits(profile, event, definitions)
            segments.after_event(customer_id, profile, event, population, new_day)
    after = rfm_values(profile)
    if before != after:
        rfm_recount(population["rfm"], before, after)
    return profile, outcomes


def erase_customer(
    profile: Profile | None, population: PopulationState, segments: Segmenter | None = None
) -> None:
    """Take an erased customer's values out of the population sketches and counts."""
    values = rfm_values(profile)
    if values is not None:
        rfm_recount(population["rfm"], values, None)
    if profile is not None and segments is not None:
        segments.erase(profile, population)


def erasure_changes(
    customer_id: str,
    profile: Profile | None,
    request_id: str,
    erased_at_ms: int,
    id_key: bytes,
) -> list[dict[str, Any]]:
    """The segment-change records of an erasure: an exit per segment, then ``customer_erased``.

    Ids are keyed hashes of the customer, the segment and the request, so a
    request carried out twice (after a crash) publishes the same ids.

    >>> profile = {"segments": {"lifecycle": {"value": "new", "since_ms": 0}}}
    >>> [(c["change_kind"], c["dimension"], c["from_segment"], c["to_segment"])
    ...  for c in erasure_changes("c1", profile, "r1", 5, b"k")]
    [('exit', 'lifecycle', 'new', None), ('customer_erased', 'customer', None, None)]
    """
    segments = profile.get("segments", {}) if profile is not None else {}
    exits = [
        ("exit", dim, state["value"], f"erased; left {dim}={state['value']}")
        for dim, state in sorted(segments.items())
    ]
    records = [*exits, ("customer_erased", "customer", None, "erased")]
    return [
        {
            "change_id": keyed_id(id_key, f"{customer_id}|{kind}|{dim}|{value}|{request_id}", 32),
            "customer_id": customer_id,
            "dimension": dim,
            "from_segment": value,
            "to_segment": None,
            "ts": erased_at_ms,
            "reason": reason,
            "change_kind": kind,
        }
        for kind, dim, value, reason in records
    ]


def erased_aliases(profile: Profile | None, held: Iterable[Mapping[str, Any]]) -> list[str]:
    """Anonymous ids stitched to a customer: from the profile and from held events.

    >>> erased_aliases({"anonymous_ids": ["a1"]}, [{"anonymous_id": "a2"}, {"anonymous_id": "a1"}])
    ['a1', 'a2']
    """
    aliases = list(profile.get("anonymous_ids", [])) if profile is not None else []
    aliases += [str(e["anonymous_id"]) for e in held if e.get("anonymous_id")]
    return sorted(set(aliases))


def index_without_customer(
    buckets: Iterable[tuple[str, Any]], customer_id: str
) -> list[tuple[str, list[Any] | None]]:
    """Deadline-index buckets that name the customer, rewritten without them.

    ``buckets`` are ``(key, entries)`` of a :class:`models.deadlines.DeadlineIndex`
    store (held-event indexes included); the ``":from"`` bookkeeping keys are
    skipped. ``None``: the bucket is now empty and is deleted. Stale entries
    — deadlines filed before the customer's current one — are found too.

    >>> buckets = [("0:7", [[1, "c1"], [2, "c2"]]), ("0:from", 7), ("0:8", [[3, "c1"]])]
    >>> index_without_customer(buckets, "c1")
    [('0:7', [[2, 'c2']]), ('0:8', None)]
    """
    rewritten: list[tuple[str, list[Any] | None]] = []
    for key, entries in buckets:
        if key.endswith(":from") or not isinstance(entries, list):
            continue
        kept = [entry for entry in entries if entry[1] != customer_id]
        if len(kept) != len(entries):
            rewritten.append((key, kept or None))
    return rewritten


def suppression_entry(erased_at_ms: int, expiry_ms: int | None) -> dict[str, int | None]:
    """What the suppression list keeps of an erased id (beside its keyed hash)."""
    expires = None if expiry_ms is None else erased_at_ms + expiry_ms
    return {"erased_at_ms": erased_at_ms, "expires_at_ms": expires}


def still_suppressed(entry: Mapping[str, Any] | None, now_ms: int) -> bool:
    """Whether a suppression list entry still drops the id's events.

    >>> never, five_ms = suppression_entry(0, None), suppression_entry(0, 5)
    >>> still_suppressed(never, 10**15), still_suppressed(five_ms, 6)
    (True, False)
    """
    if entry is None:
        return False
    expires = entry.get("expires_at_ms")
    return expires is None or now_ms < int(expires)


def partition_population(
    state: Mapping[str, Any] | None, bgnbd: Mapping[str, Any] | None
) -> Population:
    """What a customer's profile is worked out against: their own partition's
    RFM sketches — the ones their segments are decided with, so the RFM shown
    and the segment agree whichever worker serves it — and the BG/NBD fit
    pooled across partitions (:func:`combined_bgnbd`)."""
    return Population(rfm=(state or {}).get("rfm") or new_rfm_population(), bgnbd=bgnbd)


def _learn_purchase_process(profile: Profile, population: PopulationState, now_ms: int) -> None:
    """One BG/NBD learning step from this customer, at most once per day.

    Run before the customer's first event of each new event-time day, the
    sample is the purchase history observed up to that moment (``T`` = now −
    first order). Learning only at orders would observe customers exactly
    when they buy and never in their silence, which teaches the model that
    nobody drops out; sampling on any activity sees silences too. Customers
    who stop all activity stop contributing — a remaining bias towards the
    active, which the README states. Because the step depends only on the
    customer's own event order, batch boundaries do not change which samples
    are learned.
    """
    first, last = profile["first_order_ms"], profile["last_order_ms"]
    day = now_ms // DAY_MS
    if first is None or last is None or profile.get("bgnbd_learned_day", -1) >= day:
        return
    profile["bgnbd_learned_day"] = day
    x = int(profile["totals"].get("orders", 0)) - 1
    t_x = (last - first) / DAY_MS
    bgnbd_learn(population["bgnbd"], x, t_x, max((now_ms - first) / DAY_MS, t_x))


def combined_bgnbd(populations: Iterable[PopulationState]) -> BgNbdState:
    """BG/NBD parameters of several partitions pooled into one estimate.

    Each partition learns from its own customers; the log-parameters are
    averaged, weighted by the learning steps behind them, so scores do not
    depend on which partition a customer hashes to and partition noise
    averages out.
    """
    states = [p["bgnbd"] for p in populations if "bgnbd" in p]
    if not states:
        return new_bgnbd()
    weights = [int(state["steps"]) + 1 for state in states]
    total = sum(weights)
    pooled = [
        sum(w * float(state["log_params"][i]) for w, state in zip(weights, states, strict=True))
        / total
        for i in range(4)
    ]
    return {"log_params": pooled, "steps": sum(int(state["steps"]) for state in states)}


def next_deadline(
    profile: Profile,
    moments: Moments,
    segments: Segmenter | None = None,
    segments_due: tuple[int | None] | None = None,
) -> int | None:
    """The next event time at which the customer's state can change with no new event.

    ``segments_due``, when given, holds the segments' next deadline as just
    computed for the state as it is (:meth:`Segmenter.on_deadline`'s result).
    """
    due = moments.next_deadline(profile)
    if segments_due is not None:
        other = segments_due[0]
    elif segments is not None:
        other = segments.next_deadline(profile)
    else:
        return due
    return other if due is None or (other is not None and other < due) else due


def refile_deadline(
    index: DeadlineIndex,
    customer_id: str,
    profile: Profile | None,
    moments: Moments,
    segments: Segmenter | None = None,
    segments_due: tuple[int | None] | None = None,
) -> None:
    """File the customer's next deadline in the index if it changed."""
    if profile is None:
        return
    due = next_deadline(profile, moments, segments, segments_due)
    if due is not None and due != profile.get("deadline_ms"):
        index.schedule(customer_id, due)
    profile["deadline_ms"] = due


def act_on_deadline(
    customer_id: str,
    profile: Profile,
    now_ms: int,
    moments: Moments,
    segments: Segmenter | None = None,
    population: PopulationState | None = None,
) -> tuple[int | None] | None:
    """Event time reached ``now_ms`` for a quiet customer: moments, then segment
    decisions. The customer's deadline is spent; the caller files the next,
    given the segments' next deadline returned here (None: not decided)."""
    if population is not None and moments.due(profile, now_ms):
        # Quiet customers are sampled too, at their quiet ticks and churn
        # labels, so the fit sees silences (not at segment refreshes, which
        # would sample the silent far more often than the active).
        _learn_purchase_process(profile, population, now_ms)
    moments.on_deadline(customer_id, profile, now_ms, population)
    profile["deadline_ms"] = None
    if segments is not None and population is not None:
        return (segments.on_deadline(customer_id, profile, now_ms, population),)
    return None


def fire_deadlines(
    index: DeadlineIndex,
    watermark_ms: int,
    load: Callable[[str], Profile | None],
    moments: Moments,
    segments: Segmenter | None = None,
    population: PopulationState | None = None,
) -> list[tuple[str, Profile]]:
    """Act on every deadline the partition's watermark has passed.

    Returns the customers whose profiles changed (the caller stores them).
    Entries that no longer match the customer's filed deadline — they acted
    since, or were erased — are dropped.
    """
    changed: list[tuple[str, Profile]] = []
    for due, customer_id in index.pop_due(watermark_ms):
        profile = load(customer_id)
        if profile is None or profile.get("deadline_ms") != due:
            continue
        known = act_on_deadline(customer_id, profile, watermark_ms, moments, segments, population)
        refile_deadline(index, customer_id, profile, moments, segments, known)
        changed.append((customer_id, profile))
    return changed


def customer_view(
    customer_id: str,
    profile: Profile,
    config: ProfileConfig,
    as_of_ms: int | None,
    population: Population,
    value: ValueConfig,
    models: ModelBundle,
    segment_config: SegmentConfig | None = None,
    definitions: Definitions | None = None,
) -> dict[str, Any]:
    """A customer as served and exported: metrics, model features and scores;
    with ``definitions``, the user's traits and the audiences the customer is in.

    Segments a dwell holds back carry their ``pending`` value; where the
    scores shown put the churn band, persona or RFM segment elsewhere than the
    last decision did, that is shown as ``pending`` too
    (:func:`models.segments.view_pending`).
    """
    summary = summarise(profile, config, as_of_ms, population, value)
    as_of = summary["as_of_ms"]
    bgnbd = population.bgnbd if population.bgnbd is not None else new_bgnbd()
    inputs = model_inputs(profile, config, as_of, bgnbd, models.horizon_days)
    scores = models.score(inputs)
    segments: dict[str, Any] = dict(sorted(profile.get("segments", {}).items()))
    held = segments["persona"]["value"] if "persona" in segments else None
    scores["cluster_persona"] = scores["persona"]
    scores["persona"] = settled_persona(profile, held, inputs, scores["persona"], models)
    config_ = segment_config or SegmentConfig()
    segmenter = Segmenter(config_, config, models, b"", definitions=definitions)
    full_due = segmenter.next_full_decision(profile)
    shown = view_pending(profile, scores, summary["rfm"], summary["windows"], config_, full_due)
    for dim, pending in shown.items():
        segments[dim] = {**segments[dim], "pending": pending}
    view = {
        "customer_id": customer_id,
        **summary,
        "features": {name: inputs[name] for name in FEATURES},
        "churn_features": {name: inputs[name] for name in CHURN_FEATURES},
        "scores": scores,
        "segments": segments,
    }
    if definitions is not None:
        # Brought in line with the file as the next decision will (on a copy).
        profile = {**profile, "traits": dict(profile.get("traits", {}))}
        if "trait_since" in profile:
            profile["trait_since"] = dict(profile["trait_since"])
        sync_traits(profile, definitions, max(config.windows_days))
        windows = summary["windows"]
        sessions_30d = int(windows["30d"]["sessions"]) if "30d" in windows else 0
        orders_90d = int(windows["90d"]["orders"]) if "90d" in windows else 0
        built_in = metrics(
            profile, as_of, sessions_30d, orders_90d, customer_clv(profile, as_of, config_)
        )
        context = audience_context(profile, definitions, as_of, built_in, scores, segments)
        members = evaluate_audiences(definitions, context)
        view["traits"] = dict(context.traits)
        view["audiences"] = [name for name, inside in members.items() if inside]
        # Traits added while the customer had history count only from then on.
        partial = backfilling_traits(profile, definitions, as_of)
        view["traits_backfilling"] = partial
        view["audiences_backfilling"] = backfilling_audiences(definitions, partial)
        for name, inside in members.items():
            # Where the numbers shown move an audience, it applies at the next
            # full decision, said so as for the built-in dimensions.
            dim, now = audience_dimension(name), "in" if inside else "out"
            held = segments.get(dim)
            if held is not None and held["value"] != now and "pending" not in held:
                applies = full_due if full_due is not None else as_of
                segments[dim] = {**held, "pending": {"value": now, "applies_ms": applies}}
    return view
