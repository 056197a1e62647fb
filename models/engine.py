"""The partition engine: everything that happens to one input partition.

The worker and ``segstream evaluate`` both hand decoded records to a
:class:`PartitionEngine` and act on what it returns; neither has any
orchestration of its own, so an offline replay equals the live worker by
construction. The engine imports neither Faust nor aiokafka: its state lives
behind the :class:`models.deadlines.Store` protocol (a write-back cache over
a Faust table in the worker, a dict offline), and the watermarks it needs
are passed in.

One batch of a partition::

    decoded records ─┬─ anonymous / identify ──► identity state;
                     │                           re-keyed events (Outputs.rekeyed)
                     └─ by customer ──► release: events up to the release
                                        watermark, in event time; the rest held
                          ──► update_customer (profile + population)
                          ──► refile the customer's deadline
    then: held events the release watermark reached, and deadlines the
    closing watermark passed ──► segment changes, triggers, training examples

Examples
--------
>>> from models.profile import event
>>> engine = PartitionEngine(0, PartitionStores.in_memory(), EngineConfig.default())
>>> order = dict(event("purchases", "order", 10 * 86_400_000, "e1", amount=20.0),
...              customer_id="c1")
>>> out = engine.submit([order], Watermarks.up_to(10 * 86_400_000))
>>> engine.stores.profiles.get("c1")["lifetime"]
{'purchases.order': 1}
>>> [change["dimension"] for change in out.changes][:2]
['lifecycle', 'rfm_segment']
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.deadlines import DeadlineIndex, DictStore, ScannableStore, Store
from models.definitions import Definitions
from models.identity import apply_anonymous
from models.moments import Moments, Scorer
from models.pipeline import (
    act_on_deadline,
    erase_customer,
    erased_aliases,
    erasure_changes,
    index_without_customer,
    new_population,
    next_deadline,
    update_customer,
)
from models.profile import DAY_MS, ProfileConfig
from models.reorder import first_held_ms, order_key, release
from models.segments import SegmentConfig, Segmenter
from models.sentiment import compound
from models.state import PopulationState, Profile
from models.training import ModelBundle, ModelConfig

# The population of a partition lives under one key of the population store.
POPULATION_KEY_PREFIX = "p"


def population_key(partition: int) -> str:
    """The population store's key of an input partition."""
    return f"{POPULATION_KEY_PREFIX}{partition}"


def wall_clock_ms() -> int:
    """Now, epoch ms."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs to know that is not state (all from Settings)."""

    profile: ProfileConfig
    segments: SegmentConfig
    horizon_ms: int
    deadline_bucket_ms: int
    reorder_max_held: int
    anonymous_buffer_events: int
    id_key: bytes
    training_sample_rate: float = 1.0
    # A backfilled customer's moments this long before the wall clock are
    # historical (models.segments.Segmenter.historical_before_ms).
    historical_after_ms: int = 24 * 3_600_000
    # The user's traits and audiences (SEGSTREAM_DEFINITIONS_FILE), or None.
    definitions: Definitions | None = None

    @classmethod
    def default(cls) -> EngineConfig:
        """The defaults of every setting (tests and examples)."""
        return cls(
            profile=ProfileConfig(),
            segments=SegmentConfig(),
            horizon_ms=90 * DAY_MS,
            deadline_bucket_ms=3_600_000,
            reorder_max_held=256,
            anonymous_buffer_events=50,
            id_key=b"engine-example-key",
        )


@dataclass(slots=True)
class PartitionStores:
    """The keyed state of one partition, one store per kind."""

    profiles: Store  # customer_id -> profile (models.profile)
    population: Store  # "p<partition>" -> population (models.pipeline)
    held: Store  # customer_id -> events held until the watermark reaches them
    deadlines: ScannableStore  # deadline and held-event indexes (models.deadlines)
    identities: Store  # anonymous_id -> identity state (models.identity)

    @classmethod
    def in_memory(cls) -> PartitionStores:
        """Dict-backed stores (``segstream evaluate``, tests)."""
        return cls(DictStore(), DictStore(), DictStore(), DictStore(), DictStore())


@dataclass(frozen=True, slots=True)
class Watermarks:
    """The partition's input watermarks for one step (event time, epoch ms).

    ``release`` lets held events through; ``closing`` fires deadlines, caps
    the time against which sessions and carts close, and is never above
    ``release``. Events are applied in event-time order and sessions and
    carts close against each event's own time (capped by ``closing``), so
    when both watermarks are the same — every topic read or waited for —
    no decision depends on how the input was cut into batches.
    """

    closing: int
    release: int

    @classmethod
    def up_to(cls, ts: int) -> Watermarks:
        """Everything up to ``ts`` has been read (an ordered input)."""
        return cls(closing=ts, release=ts)


@dataclass
class Outputs:
    """What one step of the engine produced, for the caller to send and count.

    ``counts`` holds ``(what, label) -> n`` for the worker's metrics:
    ``processed``/``duplicate``/``stale``/``late``/``held`` by topic, ``forced``,
    ``anonymous`` by outcome, ``historical_trigger`` and ``capped_trigger``
    by trigger kind.
    """

    changes: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    rekeyed: list[dict[str, Any]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.changes or self.triggers or self.examples or self.rekeyed or self.aliases)

    def extend(self, other: Outputs) -> None:
        """Append another step's outputs after these."""
        if other:
            self.changes.extend(other.changes)
            self.triggers.extend(other.triggers)
            self.examples.extend(other.examples)
            self.rekeyed.extend(other.rekeyed)
            self.aliases.extend(other.aliases)
        if other.counts:
            self.counts.update(other.counts)


class PartitionEngine:
    """The state machine of one input partition.

    Parameters
    ----------
    partition
        The input partition this engine owns.
    stores
        Its keyed state.
    config
        Settings.
    scorer
        Returns the model bundle to score with now (the newest snapshot live).
    sentiment
        Text → compound sentiment of support texts.
    clock_ms
        The wall clock (epoch ms), read once per step: only to tell a
        backfill's old moments (``historical``) from live ones.
    """

    def __init__(
        self,
        partition: int,
        stores: PartitionStores,
        config: EngineConfig,
        scorer: Callable[[], Scorer] | None = None,
        sentiment: Callable[[str], float] = compound,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.partition = partition
        self._clock_ms = clock_ms
        self.stores = stores
        self.config = config
        self._scorer = scorer or _default_scorer()
        self._sentiment = sentiment
        self._pop_key = population_key(partition)
        self.deadlines = DeadlineIndex(stores.deadlines, partition, config.deadline_bucket_ms)
        # Held events by event time, beside the deadlines in the same store.
        self.held_index = DeadlineIndex(
            stores.deadlines, partition, config.deadline_bucket_ms, namespace="h"
        )
        # The watermarks this partition was last advanced to.
        self.advanced_to: tuple[int, int] = (0, 0)

    # -- steps ---------------------------------------------------------------------

    def submit(self, records: Sequence[Mapping[str, Any]], marks: Watermarks) -> Outputs:
        """Apply a batch of decoded records (as dicts with ``topic``), then advance.

        Records without a ``customer_id``, and ``identify`` clicks, go to
        identity stitching; the events they release come back in
        ``Outputs.rekeyed``, to be read again under the customer's key.
        """
        step = _Step(self._moments, self._segmenter)
        by_customer: dict[str, list[dict[str, Any]]] = {}
        for fields in records:
            if fields["topic"] == "clickstream" and (
                fields.get("customer_id") is None or fields.get("type") == "identify"
            ):
                self._stitch(fields, step.outputs)
                step.outputs.counts["processed", "clickstream"] += 1
                continue
            by_customer.setdefault(str(fields["customer_id"]), []).append(dict(fields))
        # by_customer: {customer_id: [event fields, ...]} in arrival order
        self._run(step, by_customer, marks)
        return step.collect()

    def advance(self, marks: Watermarks) -> Outputs:
        """The watermarks moved with no new event: held events and deadlines."""
        step = _Step(self._moments, self._segmenter)
        self._run(step, {}, marks)
        return step.collect()

    def erase_customer(
        self, customer_id: str, request_id: str, erased_at_ms: int
    ) -> tuple[Outputs, list[str]]:
        """Remove every trace of a customer from this partition's state.

        Tombstones for the profile and held events, every deadline and
        held-index entry naming the customer (stale ones too), the
        customer's values taken out of the population. Returns the outputs —
        an exit per segment the customer was in, then ``customer_erased``,
        and the stitched anonymous ids to erase in their own partitions — and
        what was erased.
        """
        outputs = Outputs()
        erased: list[str] = []
        population = self._population()
        held = self.stores.held.get(customer_id) or []
        if held:
            _set_holding(population, population.get("held_customers", 0) - 1)
            self.stores.held.delete(customer_id)
            erased.append("held_events")
        profile = self.stores.profiles.get(customer_id)
        if profile is not None:
            erase_customer(profile, population, self._segmenter())
            self.stores.profiles.delete(customer_id)
            erased.append("profile")
        prefixes = (f"{self.partition}:", f"h{self.partition}:")
        buckets = [
            (key, self.stores.deadlines.get(key))
            for key in self.stores.deadlines.keys_with_prefix(prefixes)
        ]
        for key, entries in index_without_customer(buckets, customer_id):
            if entries is None:
                self.stores.deadlines.delete(key)
            else:
                self.stores.deadlines.put(key, entries)
            erased.append("deadline_entry")
        self.stores.population.put(self._pop_key, population)
        outputs.changes.extend(
            erasure_changes(customer_id, profile, request_id, erased_at_ms, self.config.id_key)
        )
        outputs.aliases.extend(erased_aliases(profile, held))
        return outputs, erased

    def erase_alias(self, anonymous_id: str) -> list[str]:
        """Remove an anonymous id's identity state; what was erased."""
        if self.stores.identities.get(anonymous_id) is None:
            return []
        self.stores.identities.delete(anonymous_id)
        return ["identity"]

    # -- inside a step -------------------------------------------------------------

    def _moments(self) -> Moments:
        return Moments(
            scorer=self._scorer(),
            horizon_ms=self.config.horizon_ms,
            profile_config=self.config.profile,
            id_key=self.config.id_key,
            sample_rate=self.config.training_sample_rate,
        )

    def _segmenter(self) -> Segmenter:
        return Segmenter(
            config=self.config.segments,
            profile_config=self.config.profile,
            scorer=self._scorer(),
            id_key=self.config.id_key,
            historical_before_ms=self._clock_ms() - self.config.historical_after_ms,
            definitions=self.config.definitions,
        )

    def _population(self) -> PopulationState:
        population: PopulationState | None = self.stores.population.get(self._pop_key)
        return population if population is not None else new_population()

    def _stitch(self, fields: Mapping[str, Any], outputs: Outputs) -> None:
        anonymous_id = str(fields["anonymous_id"])
        event = {key: value for key, value in fields.items() if key != "topic"}
        state, released, outcome = apply_anonymous(
            self.stores.identities.get(anonymous_id), event, self.config.anonymous_buffer_events
        )
        self.stores.identities.put(anonymous_id, state)
        outputs.counts["anonymous", outcome] += 1
        outputs.rekeyed.extend(released)

    def _run(
        self, step: _Step, arrived: dict[str, list[dict[str, Any]]], marks: Watermarks
    ) -> None:
        """Everything the watermarks reached, in event-time order across customers.

        The events the release watermark lets through — newly arrived and held
        ones — are applied one by one in ``(ts, event_id)`` order, and before
        each, the deadlines due before it fire, each at its own time; then the
        deadlines up to the closing watermark. So the partition's state moves
        through the same sequence however its input is cut into batches, and
        however far apart its topics are read.
        """
        step.closing = marks.closing
        population = self._population()
        ready: list[dict[str, Any]] = []
        for customer_id, events in arrived.items():
            ready += self._release(step, customer_id, events, marks, population)
        # Events held for customers with nothing new, now that the watermark reached them.
        if self.held_index.may_have_due(marks.release):
            for held_at, customer_id in self.held_index.pop_due(marks.release):
                if customer_id not in arrived and (
                    first_held_ms(self.stores.held.get(customer_id) or []) == held_at
                ):
                    ready += self._release(step, customer_id, [], marks, population)
        ready.sort(key=order_key)
        # ready: every event to apply now, in event-time order
        deadlines: list[tuple[int, str]] = []  # popped from the index: a heap
        counts = step.outputs.counts
        for fields in ready:
            ts = int(fields["ts"])
            counts["processed", fields["topic"]] += 1
            self._fire(step, deadlines, ts - 1, population)
            self._apply(step, fields, min(ts, marks.closing), population)
        self._fire(step, deadlines, marks.closing, population)
        self._file_the_rest(step)
        if ready or step.touched_population:
            self.stores.population.put(self._pop_key, population)
        self.advanced_to = (marks.closing, marks.release)

    def _release(
        self,
        step: _Step,
        customer_id: str,
        arrived: list[dict[str, Any]],
        marks: Watermarks,
        population: PopulationState,
    ) -> list[dict[str, Any]]:
        """A customer's events the release watermark has reached; the rest are held."""
        holding = population.get("held_customers", 0) > 0
        held = (self.stores.held.get(customer_id) or []) if holding else []
        ready, still, forced = release(held, arrived, marks.release, self.config.reorder_max_held)
        if forced:
            step.outputs.counts["forced", ""] += forced
        if still != held:
            self._hold(step.outputs, customer_id, held, still, population)
            step.touched_population = True
        return ready

    def _apply(
        self, step: _Step, fields: dict[str, Any], horizon: int, population: PopulationState
    ) -> None:
        """One event into its customer's profile and the population.

        ``horizon`` closes the customer's sessions and carts that ended before
        it: the event's own time (every earlier event of the partition has been
        applied), but never past the closing watermark, so a topic that may
        still bring older events (``INPUT_IDLE_S``) is waited for.
        """
        customer_id = str(fields["customer_id"])
        ts = int(fields["ts"])
        profile, (outcome,) = update_customer(
            self.stores.profiles.get(customer_id),
            (fields,),
            population,
            self.config.profile,
            self._sentiment,
            horizon,
            customer_id,
            step.moments,
            step.segmenter,
        )
        population["watermark_ms"] = max(population.get("watermark_ms", 0), ts)
        if outcome != "applied":
            step.outputs.counts[outcome, fields["topic"]] += 1
        if outcome in ("applied", "late") and profile is not None:
            self._refile(step, customer_id, profile)
            self.stores.profiles.put(customer_id, profile)

    def _refile(
        self,
        step: _Step,
        customer_id: str,
        profile: Profile,
        segments_due: tuple[int | None] | None = None,
    ) -> None:
        """Note the customer's next deadline; file it in the index once per step.

        A deadline this step may still fire (at or before its closing
        watermark) is filed at once; a later one when the step ends, so a
        customer with many events in a batch is filed once, not per event.
        """
        due = next_deadline(profile, step.moments, step.segmenter, segments_due)
        if due is not None and due != profile.get("deadline_ms"):
            if due <= step.closing:
                self.deadlines.schedule(customer_id, due)
            else:
                step.unfiled[customer_id] = due
        profile["deadline_ms"] = due

    def _file_the_rest(self, step: _Step) -> None:
        """File the deadlines noted in the step that are still each customer's own."""
        for customer_id, due in step.unfiled.items():
            profile = self.stores.profiles.get(customer_id)
            if profile is not None and profile.get("deadline_ms") == due:
                self.deadlines.schedule(customer_id, due)

    def _fire(
        self, step: _Step, due: list[tuple[int, str]], limit: int, population: PopulationState
    ) -> None:
        """Fire every deadline at or before ``limit``, in time order, each at its own time.

        Customers who went quiet change state as event time passes their
        deadlines; a deadline filed again at or before ``limit`` fires in turn.
        """
        # Called before every event: one comparison while nothing can be due.
        floor = self.deadlines.floor_ms()
        if floor is not None and limit >= floor:
            for entry in self.deadlines.pop_due(limit):
                heapq.heappush(due, entry)
        while due and due[0][0] <= limit:
            at, customer_id = heapq.heappop(due)
            profile = self.stores.profiles.get(customer_id)
            if profile is None or profile.get("deadline_ms") != at:
                continue  # acted since, or erased: the entry is stale
            known = act_on_deadline(
                customer_id, profile, at, step.moments, step.segmenter, population
            )
            self._refile(step, customer_id, profile, known)
            following = profile.get("deadline_ms")
            if following is not None and following <= limit:
                heapq.heappush(due, (following, customer_id))
            self.stores.profiles.put(customer_id, profile)
            step.touched_population = True

    def _hold(
        self,
        outputs: Outputs,
        customer_id: str,
        held: list[dict[str, Any]],
        still: list[dict[str, Any]],
        population: PopulationState,
    ) -> None:
        """Keep a customer's held events (with the index entry of the oldest) and
        the partition's count of customers holding any."""
        was_held = {fields["event_id"] for fields in held}
        for fields in still:
            if fields["event_id"] not in was_held:
                outputs.counts["held", fields["topic"]] += 1
        if still:
            self.stores.held.put(customer_id, still)
            first = first_held_ms(still)
            if first is not None and first != first_held_ms(held):
                self.held_index.schedule(customer_id, first)
        else:
            self.stores.held.delete(customer_id)
        holding = population.get("held_customers", 0) + (1 if still else 0) - (1 if held else 0)
        _set_holding(population, holding)


def _set_holding(population: PopulationState, customers: int) -> None:
    # Absent when nobody holds events, so the state does not depend on
    # whether anything was ever held.
    if customers > 0:
        population["held_customers"] = customers
    else:
        population.pop("held_customers", None)


class _Step:
    """The collectors one step shares between its customers, made when first needed
    (most partitions have nothing due at most steps)."""

    __slots__ = (
        "_moments",
        "_new_moments",
        "_new_segmenter",
        "_segmenter",
        "closing",
        "outputs",
        "touched_population",
        "unfiled",
    )

    def __init__(
        self, new_moments: Callable[[], Moments], new_segmenter: Callable[[], Segmenter]
    ) -> None:
        self._new_moments = new_moments
        self._new_segmenter = new_segmenter
        self._moments: Moments | None = None
        self._segmenter: Segmenter | None = None
        self.outputs = Outputs()
        self.touched_population = False
        self.closing = 0  # the step's closing watermark
        # customer -> a deadline past the closing watermark, filed when the step ends
        self.unfiled: dict[str, int] = {}

    @property
    def moments(self) -> Moments:
        if self._moments is None:
            self._moments = self._new_moments()
        return self._moments

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = self._new_segmenter()
        return self._segmenter

    def collect(self) -> Outputs:
        if self._segmenter is not None:
            self.outputs.changes.extend(self._segmenter.changes)
            self.outputs.triggers.extend(self._segmenter.triggers)
            for kind in self._segmenter.withheld:
                self.outputs.counts["historical_trigger", kind] += 1
            for kind in self._segmenter.capped:
                self.outputs.counts["capped_trigger", kind] += 1
        if self._moments is not None:
            self.outputs.examples.extend(self._moments.examples)
        return self.outputs


def _default_scorer() -> Callable[[], Scorer]:
    bundle = ModelBundle(ModelConfig())
    return lambda: bundle
