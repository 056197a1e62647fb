"""Faust agents: decode, call the pure logic in ``models``, write state, send.

Agents stay thin; every rule lives in ``models`` and ``schemas``.

``update_profiles`` reads the three touchpoint topics as one stream, in
batches (``stream.take_events``):

    raw bytes ─ decode_event ─┬─ DecodeError ──► dead-letters topic (+ metric)
                              ├─ anonymous / identify ──► identities_table,
                              │                           re-issued to clickstream
                              └─ record ──► grouped by customer
                                   ──► release: up to the partition's input
                                       watermark, in event time; the rest held
                                       (held_table, models.reorder)
                                   ──► update_customer (profile + population)
                                   ──► write-back cache ──(on commit)──► tables
                then, per partition: held events and deadlines the watermark
                reached ──► segment changes, triggers, training examples

Two input watermarks per partition (:class:`InputWatermarks`): the
*closing* one (``INPUT_IDLE_S``, cautious) closes day windows, sessions and
carts and fires deadlines; the *release* one (``REORDER_IDLE_S``, prompt by
default) lets held events through, so live latency does not wait for a quiet
topic. Both use event time; only a caught-up topic's idleness is wall-clock.

State is written to the tables once per customer per offset commit, not
once per event (:mod:`streams.state_cache`): Faust writes the caches back
when a commit begins and commits only offsets whose state is written, so a
crash replays exactly the events whose effect was lost — and per-customer
deduplication drops any whose effect was not.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from aiokafka.errors import KafkaError
from faust.types import TP

from models.deadlines import DeadlineIndex
from models.identity import apply_anonymous
from models.moments import Moments
from models.pipeline import (
    erase_customer,
    erased_aliases,
    erasure_changes,
    fire_deadlines,
    index_without_customer,
    new_population,
    refile_deadline,
    still_suppressed,
    suppression_entry,
    update_customer,
)
from models.profile import DAY_MS
from models.reorder import first_held_ms, release
from models.segments import Segmenter
from models.sentiment import compound
from schemas.decode import DecodeError, dead_letter, decode_event
from schemas.records import (
    ClickEvent,
    ErasureAudit,
    ErasureRequest,
    SegmentChange,
    Trigger,
)
from streams import metrics
from streams.app import app, settings
from streams.model_sync import holder
from streams.outbox import Outbox, RecordTooLargeError, UndeliveredError
from streams.state_cache import FlushOnCommit, TableWriter, WriteBackCache, flush_all, partition_of
from streams.tables import (
    deadlines_table,
    held_table,
    identities_table,
    population_key,
    population_table,
    profiles_table,
    suppressed_table,
)
from streams.topics import (
    ROLE_BY_TOPIC,
    clickstream_topic,
    dead_letters_topic,
    erasure_audit_topic,
    erasure_requests_topic,
    segment_changes_topic,
    touchpoints_topic,
    training_examples_topic,
    triggers_topic,
)

log = logging.getLogger(__name__)

LIMITS = settings.decode_limits()
PROFILE_CONFIG = settings.profile_config()
HORIZON_MS = int(settings.churn_horizon_days * DAY_MS)
DEADLINE_BUCKET_MS = settings.deadline_bucket_s * 1000
EXAMPLE_ID_KEY = settings.model_snapshot_key.get_secret_value().encode()
SEGMENT_CONFIG = settings.segment_config()

# Changelog writes and outputs go to Faust's producer in whole batches
# (streams.outbox), not through Faust's per-message send path.
outbox = Outbox(lambda: app.producer._ensure_producer())


def _cache(table: Any, max_clean: int) -> WriteBackCache:
    # WRITE_BACK=false is the benchmarks' model of Faust's usual pattern:
    # every write through the table, a changelog record each, Faust's send path.
    writer = TableWriter(table, outbox) if settings.write_back else None
    return WriteBackCache(table, max_clean=max_clean, writer=writer)


profile_cache = _cache(profiles_table, settings.profile_cache_size)
population_cache = _cache(population_table, settings.input_partitions * 2)
deadline_cache = _cache(deadlines_table, settings.input_partitions * 64)
held_cache = _cache(held_table, settings.input_partitions * 256)
CACHES = (profile_cache, population_cache, deadline_cache, held_cache)
app.sensors.add(FlushOnCommit(list(CACHES), outbox))
OUTPUT_TOPICS = (training_examples_topic, segment_changes_topic, triggers_topic)


class CachedStore:
    """A :class:`models.deadlines.Store` over a write-back cache, in one partition."""

    def __init__(self, cache: WriteBackCache, anchor: Any) -> None:
        self.cache = cache
        self.anchor = anchor  # an event of the partition: where writes land

    def get(self, key: str) -> Any:
        return self.cache.get(key, self.anchor)

    def put(self, key: str, value: Any) -> None:
        self.cache.put(key, value, self.anchor)

    def delete(self, key: str) -> None:
        # At the commit, like the writes: the profiles a popped bucket's
        # deadlines changed are written then too.
        self.cache.delete_on_commit(key, self.anchor)


def deadline_index(partition: int, anchor: Any) -> DeadlineIndex:
    """The deadline index of an input partition, read and written through the cache."""
    return DeadlineIndex(CachedStore(deadline_cache, anchor), partition, DEADLINE_BUCKET_MS)


def held_index(partition: int, anchor: Any) -> DeadlineIndex:
    """Held events of an input partition by event time (beside its deadlines)."""
    return DeadlineIndex(
        CachedStore(deadline_cache, anchor), partition, DEADLINE_BUCKET_MS, namespace="h"
    )


def new_moments() -> Moments:
    """Collects a batch's model moments, scored with the newest model snapshot."""
    return Moments(
        scorer=holder.bundle,
        horizon_ms=HORIZON_MS,
        profile_config=PROFILE_CONFIG,
        id_key=EXAMPLE_ID_KEY,
        sample_rate=settings.training_sample_rate,
    )


def new_segmenter() -> Segmenter:
    """Collects a batch's segment changes and triggers, scored with the newest model."""
    return Segmenter(
        config=SEGMENT_CONFIG,
        profile_config=PROFILE_CONFIG,
        scorer=holder.bundle,
        id_key=EXAMPLE_ID_KEY,
    )


def now_ms() -> int:
    """Wall clock, only to reject events from the future and stamp audit records."""
    return time.time_ns() // 1_000_000


@app.agent(touchpoints_topic)
async def update_profiles(stream: Any) -> None:
    """Clickstream, purchases and support → profiles and partition populations."""
    async for batch in stream.take_events(settings.batch_max_events, settings.batch_max_wait_s):
        async with processing:
            try:
                await _process_batch(stream, batch)
            except Exception as exc:
                # Faust acknowledges a batch the agent raised on, and restarts
                # the agent: the rest of the batch would be committed unread.
                # Stop before any commit instead; the batch is consumed again.
                first, last = batch[0].message, batch[-1].message
                failure = UndeliveredError(
                    f"batch of {len(batch)} events from {position(first)} to {position(last)} "
                    f"failed ({type(exc).__name__})"
                )
                outbox.stop(failure)
                raise


class InputWatermarks:
    """Per partition, the event time up to which every input topic has been read.

    A worker reads the three touchpoint topics at their own pace: in a
    backfill, clicks can run hours of event time ahead of orders. Each topic
    partition's frontier is the latest event time read from it; the
    partition's watermark is the smallest frontier. A topic partition that
    has been caught up (nothing left to fetch) for ``idle_s`` seconds of
    wall-clock time (a quiet support topic, say) stops holding the others
    back — the only use of wall-clock time here, as in Flink's idleness and
    Kafka Streams' ``max.task.idle.ms``. Two idle times are asked for: a
    cautious one for closing windows and firing deadlines, and a short one
    for releasing held events (see the module docstring).
    """

    def __init__(self) -> None:
        self.frontier: dict[tuple[str, int], int] = {}
        self.caught_up_since: dict[tuple[str, int], float | None] = {}

    def observe(self, message: Any, ts: int | None) -> None:
        """A message was read; ``ts`` is its event time (``None``: undecodable)."""
        key = (message.topic, message.partition)
        if ts is not None:
            self.frontier[key] = max(self.frontier.get(key, ts), ts)
        try:
            highwater = app.consumer.highwater(message.tp) if app.consumer else None
        except (AssertionError, KafkaError):  # revoked meanwhile
            highwater = None
        caught_up = highwater is not None and message.offset + 1 >= highwater
        # Idle means caught up with nothing new for idle_s: every message
        # restarts the clock.
        self.caught_up_since[key] = time.monotonic() if caught_up else None

    def watermark(self, partition: int, idle_s: float) -> int:
        """The partition's input watermark; 0 while an input may still bring older data."""
        now = time.monotonic()
        frontiers: list[int] = []
        holding: list[int] = []
        for topic in ROLE_BY_TOPIC:
            key = (topic, partition)
            since = self.caught_up_since.get(key)
            idle = since is not None and now - since >= idle_s
            if key in self.frontier:
                frontiers.append(self.frontier[key])
                if not idle:
                    holding.append(self.frontier[key])
            elif not idle:
                # Never read from in this process: unread data, or an empty
                # partition whose idleness clock starts now.
                self._start_idle_clock_if_empty(key)
                return 0
        if not frontiers:
            return 0
        return min(holding) if holding else max(frontiers)

    def _start_idle_clock_if_empty(self, key: tuple[str, int]) -> None:
        # Synchronous on purpose: asking the consumer thread (``position``)
        # while holding the processing lock deadlocks a rebalance, whose
        # revocation waits on the event loop for the batch to finish. The
        # offset Faust seeked to at assignment (the committed one) stands in
        # for the position of a partition nothing was read from yet.
        if self.caught_up_since.get(key) is not None or app.consumer is None:
            return
        tp = TP(*key)
        try:
            highwater = app.consumer.highwater(tp)
        except (AssertionError, KafkaError):  # not assigned (any more): not idle
            return
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        if highwater is not None and (highwater == 0 or (committed or 0) >= highwater):
            self.caught_up_since[key] = time.monotonic()


input_watermarks = InputWatermarks()


def watermarks(partitions: Iterable[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition: the cautious watermark (windows, deadlines) and the release one."""
    closing = {p: input_watermarks.watermark(p, settings.input_idle_s) for p in partitions}
    release = {p: input_watermarks.watermark(p, settings.reorder_idle_s) for p in closing}
    # Never release below what is closed: a window closed against an event time
    # has every event up to it applied.
    return closing, {p: max(release[p], closing[p]) for p in closing}


async def _process_batch(stream: Any, batch: list[Any]) -> None:
    # The watermark is what was read *before* this batch: every event of a
    # customer up to it has been applied already.
    watermark_before = {
        p: input_watermarks.watermark(p, settings.input_idle_s)
        for p in {e.message.partition for e in batch}
    }
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    partition_of_customer: dict[str, int] = {}
    anchors: dict[int, Any] = {}  # partition -> an event of it: where writes land
    # (topic, partition) -> its last message in the batch and latest event time
    read: dict[tuple[str, int], tuple[Any, int | None]] = {}
    received_ms = now_ms()
    for event in batch:
        message = event.message
        role = ROLE_BY_TOPIC[message.topic]
        try:
            record = decode_event(role, message.key, message.value, LIMITS, now_ms())
        except DecodeError as exc:
            # Read all the same, so it holds nothing back.
            read[(message.topic, message.partition)] = (message, _latest(read, message, None))
            await _send_dead_letter(role, message, exc)
            continue
        metrics.child(metrics.events_consumed, role, record.type).inc()
        metrics.child(metrics.event_lag, role).observe(max(received_ms - int(record.ts), 0) / 1000)
        read[(message.topic, message.partition)] = (message, _latest(read, message, int(record.ts)))
        if _suppressed(role, record):  # an erased id: dropped and counted (erase_customers)
            continue
        if isinstance(record, ClickEvent) and (
            record.customer_id is None or record.type == "identify"
        ):
            await _stitch_identity(stream, event, record)
            continue
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        by_customer[str(record.customer_id)].append(fields)
        partition_of_customer[str(record.customer_id)] = message.partition
        anchors[message.partition] = event
    # by_customer: {customer_id: [event fields, ...]} in arrival order
    for message, ts in read.values():
        input_watermarks.observe(message, ts)

    watermark, release_at = watermarks(anchors)
    state = _BatchState(new_moments(), new_segmenter(), watermark_before, watermark, release_at)
    for customer_id, arrived in by_customer.items():
        partition = partition_of_customer[customer_id]
        _advance_customer(state, customer_id, arrived, partition, anchors[partition])
    for partition, anchor in anchors.items():
        _advance_partition(state, partition, anchor)
        last_anchor[partition] = anchor
    await _send_outputs(state)


def _latest(
    read: dict[tuple[str, int], tuple[Any, int | None]], message: Any, ts: int | None
) -> int | None:
    """The latest event time read from the message's topic partition in this batch."""
    before = read.get((message.topic, message.partition), (None, None))[1]
    if before is None or ts is None:
        return ts if before is None else before
    return max(before, ts)


def _advance_partition(state: _BatchState, partition: int, anchor: Any) -> None:
    """What the partition's watermark reached: held events, then deadlines."""
    watermark = state.watermark[partition]
    # Events held for customers with nothing new, now that the watermark reached them.
    for due, customer_id in held_index(partition, anchor).pop_due(state.release_at[partition]):
        if first_held_ms(held_cache.get(customer_id, anchor) or []) == due:
            _advance_customer(state, customer_id, [], partition, anchor)
    # Customers who went quiet change state as the watermark passes their deadlines.
    pop_key = population_key(partition)
    population = population_cache.get(pop_key, anchor) or new_population()
    due = fire_deadlines(
        deadline_index(partition, anchor),
        watermark,
        lambda customer_id: profile_cache.get(customer_id, anchor),
        state.moments,
        state.segmenter,
        population,
    )
    for customer_id, profile in due:
        profile_cache.put(customer_id, profile, anchor)
    if due:
        population_cache.put(pop_key, population, anchor)
    advanced_to[partition] = (watermark, state.release_at[partition])


async def _send_outputs(state: _BatchState) -> None:
    """Training examples, segment changes and triggers of a batch; state if not written back."""
    for topic in OUTPUT_TOPICS:
        await outbox.learn_partitions(topic.get_topic_name())
    examples_topic = training_examples_topic.get_topic_name()
    for example in state.moments.examples:
        outbox.append_keyed(examples_topic, None, orjson.dumps(example))
        metrics.child(metrics.training_examples_sent, example["kind"]).inc()
    publish_segments(state.segmenter)
    if not settings.write_back:
        flush_all(CACHES)
    outbox.hand_off()


# Per owned input partition: its latest event (where state writes land when
# no new event comes) and the watermark it was last advanced to.
last_anchor: dict[int, Any] = {}
advanced_to: dict[int, tuple[int, int]] = {}
# A batch and the idle-time advance never interleave.
processing = asyncio.Lock()


@app.timer(interval=1.0)
async def advance_idle_partitions() -> None:
    """Move partitions on when no event comes but their watermark moved.

    An input topic that is caught up and idle stops holding a partition's
    watermark back (``INPUT_IDLE_S``) without any new event to process, so
    the events it held and the deadlines it passed are acted on here.
    """
    if app.rebalancing:
        return  # partitions are moving; the next batch or tick moves them on
    async with processing:
        watermark, release_at = watermarks(list(last_anchor))
        before = {p: closing for p, (closing, _) in advanced_to.items()}
        moved = [p for p in watermark if (watermark[p], release_at[p]) > advanced_to.get(p, (0, 0))]
        if not moved:
            return
        state = _BatchState(new_moments(), new_segmenter(), before, watermark, release_at)
        for partition in moved:
            anchor = last_anchor.get(partition)  # None: revoked meanwhile
            if anchor is not None:
                _advance_partition(state, partition, anchor)
        await _send_outputs(state)


@dataclass
class _BatchState:
    """What the customers of one batch share: collectors and watermarks."""

    moments: Moments
    segmenter: Segmenter
    watermark_before: dict[int, int]  # closing watermark before the batch
    watermark: dict[int, int]  # closing watermark: windows, carts, deadlines
    release_at: dict[int, int]  # release watermark: held events


def _advance_customer(
    state: _BatchState, customer_id: str, arrived: list[dict[str, Any]], partition: int, anchor: Any
) -> None:
    """Apply a customer's events the watermark has reached; hold the rest."""
    pop_key = population_key(partition)
    population = population_cache.get(pop_key, anchor) or new_population()
    holding = population.get("held_customers", 0) > 0
    held = (held_cache.get(customer_id, anchor) or []) if holding else []
    ready, still, forced = release(
        held, arrived, state.release_at[partition], settings.reorder_max_held
    )
    if forced:
        metrics.held_released_early.inc(forced)
    if still != held:
        _hold(customer_id, held, still, population, partition, anchor)
        population_cache.put(pop_key, population, anchor)
    if not ready:
        return
    profile, outcomes = update_customer(
        profile_cache.get(customer_id, anchor),
        ready,
        population,
        PROFILE_CONFIG,
        compound,
        state.watermark_before.get(partition, 0),
        customer_id,
        state.moments,
        state.segmenter,
    )
    population["watermark_ms"] = max(population.get("watermark_ms", 0), int(ready[-1]["ts"]))
    for fields, outcome in zip(ready, outcomes, strict=True):
        if outcome == "duplicate":
            metrics.child(metrics.duplicate_events, fields["topic"]).inc()
        elif outcome == "late":
            metrics.child(metrics.late_events, fields["topic"]).inc()
    if any(outcome != "duplicate" for outcome in outcomes):
        index = deadline_index(partition, anchor)
        refile_deadline(index, customer_id, profile, state.moments, state.segmenter)
        profile_cache.put(customer_id, profile, anchor)
    population_cache.put(pop_key, population, anchor)


def _hold(
    customer_id: str,
    held: list[dict[str, Any]],
    still: list[dict[str, Any]],
    population: dict[str, Any],
    partition: int,
    anchor: Any,
) -> None:
    """Keep a customer's held events (with the index entry of the oldest) and
    the partition's count of customers holding any."""
    was_held = {fields["event_id"] for fields in held}
    for fields in still:
        if fields["event_id"] not in was_held:
            metrics.child(metrics.held_events, fields["topic"]).inc()
    if still:
        held_cache.put(customer_id, still, anchor)
        first = first_held_ms(still)
        if first is not None and first != first_held_ms(held):
            held_index(partition, anchor).schedule(customer_id, first)
    else:
        held_cache.delete_on_commit(customer_id, anchor)
    population["held_customers"] = population.get("held_customers", 0) + (
        (1 if still else 0) - (1 if held else 0)
    )


def publish_segments(segmenter: Segmenter) -> None:
    """Send a batch's segment changes and triggers, keyed by customer."""
    sent_ms = now_ms()
    changes_topic = segment_changes_topic.get_topic_name()
    for change in segmenter.changes:
        record = SegmentChange(**change)
        outbox.append_keyed(changes_topic, record.customer_id.encode(), msgspec.json.encode(record))
        metrics.child(metrics.segment_changes, record.dimension, record.to_segment).inc()
        metrics.change_lag.observe(max(sent_ms - record.ts, 0) / 1000)
    fired_topic = triggers_topic.get_topic_name()
    for trigger in segmenter.triggers:
        fired = Trigger(**trigger)
        outbox.append_keyed(fired_topic, fired.customer_id.encode(), msgspec.json.encode(fired))
        metrics.child(metrics.triggers, fired.kind).inc()


@app.on_partitions_revoked.connect
async def _forget_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    # Written when the rebalance started; a batch that finished since is
    # written now, then the revoked partitions' entries are forgotten.
    partitions = {tp.partition for tp in revoked if tp.topic in ROLE_BY_TOPIC}
    for partition in partitions:
        last_anchor.pop(partition, None)
        advanced_to.pop(partition, None)
    for cache in CACHES:
        try:
            cache.flush()
        except Exception:  # a store already closed for revoked partitions
            log.exception("flush on revoke failed; those events will be consumed again")
        cache.discard_partitions(partitions)
    try:
        outbox.hand_off()
    except Exception:  # the producer is stopping: nothing written is committed either
        log.exception("hand-off on revoke failed; those events will be consumed again")
        outbox.discard()


async def _send_dead_letter(role: str, message: Any, exc: DecodeError) -> None:
    record = dead_letter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        error=exc,
        message_timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        failed_at_ms=now_ms(),
        max_bytes=settings.dead_letter_max_bytes,
    )
    # Keyed by the original key's kept prefix: a huge key must not make it unsendable.
    letter_key = None if message.key is None else message.key[: settings.dead_letter_max_bytes]
    await _send_or_stop(dead_letters_topic, letter_key, msgspec.json.encode(record), message)
    metrics.decode_failures.labels(role, exc.kind).inc()
    metrics.dead_letters.labels(role).inc()
    log.info(
        "dead letter topic=%s partition=%s offset=%s reason=%s",
        message.topic,
        message.partition,
        message.offset,
        exc.kind,
    )


async def _stitch_identity(stream: Any, event: Any, record: ClickEvent) -> None:
    anonymous_id = str(record.anonymous_id)
    with partition_of(event):
        state, released, outcome = apply_anonymous(
            identities_table.get(anonymous_id),
            msgspec.to_builtins(record),
            settings.anonymous_buffer_events,
        )
        identities_table[anonymous_id] = state
    metrics.anonymous_events.labels(outcome).inc()
    for fields in released:
        # Re-keyed by customer_id, so it lands beside the customer's state.
        key = str(fields["customer_id"]).encode()
        await _send_or_stop(clickstream_topic, key, orjson.dumps(fields), event.message)


async def _send_or_stop(topic: Any, key: bytes | None, value: bytes, message: Any) -> None:
    """Send a record that ``message`` gave rise to, through the outbox.

    Delivered before the offset commit that covers ``message``, or the worker
    stops without that commit (:mod:`streams.outbox`) and ``message`` is
    consumed again. A record that can never be sent stops it too, naming
    ``message``'s position: skipping it would acknowledge an event whose
    output is lost.
    """
    name = topic.get_topic_name()
    await outbox.learn_partitions(name)
    try:
        outbox.append_keyed(name, key, value, origin=position(message))
    except RecordTooLargeError as exc:
        outbox.stop(exc)
        raise


def position(message: Any) -> str:
    """Where an input record is, for logs: topic, partition and offset, never its content."""
    return f"{message.topic}/{message.partition}@{message.offset}"


# --- Right to be forgotten ----------------------------------------------------
#
# An erasure removes the customer from every table (tombstones in each
# changelog), publishes an exit per segment and `customer_erased`, and adds the
# id's keyed hash to the suppression list. Then the partition's RocksDB files
# are compacted and the changelog partitions are made to roll, so the old
# values leave the disk and the broker within the erasure bound (README, Right
# to be forgotten).

AUDIT_HASH_KEY = settings.audit_hash_key.get_secret_value().encode()
SUPPRESSION_EXPIRY_MS = (
    None
    if settings.suppression_expiry_days is None
    else int(settings.suppression_expiry_days * DAY_MS)
)
# Keyed hashes of the suppressed ids of this worker's partitions -> expiry (None: never).
suppressed_hashes: dict[str, int | None] = {}
# id -> its hash if suppressed, else None: an HMAC costs microseconds, a lookup
# a tenth of one. Bounded; emptied whenever the list changes.
_verdicts: dict[str, str | None] = {}
VERDICTS_MAX = 100_000
# Written to a changelog partition twice after an erasure, so its segments roll
# even when nothing else is written there (the broker compacts only rolled
# segments, and rolls one only at an append after segment.ms): once after
# segment.ms, so the old values are compacted away; again once the erasure's
# own tombstones (keyed by the id) are past delete.retention.ms, so a second
# cleaning drops them. A table never holds this key.
ROLL_KEY = b"__segstream_roll__"
_CHANGELOG = settings.changelog_configs()
ROLL_AFTER_S = int(_CHANGELOG["segment.ms"]) / 1000 + 1
# After the first cleaning, which follows the first roll within the cleaner's backoff.
SECOND_ROLL_AFTER_S = max(1.5 * int(_CHANGELOG["delete.retention.ms"]) / 1000, ROLL_AFTER_S)
# changelog partition -> (monotonic time of the next roll, rolls left)
roll_due: dict[tuple[str, int], tuple[float, int]] = {}
try:
    from rocksdict import BottommostLevelCompaction, CompactOptions

    FORCE_BOTTOMMOST: Any = CompactOptions()
    FORCE_BOTTOMMOST.set_bottommost_level_compaction(BottommostLevelCompaction.force())
except ImportError:  # pragma: no cover - memory store only
    FORCE_BOTTOMMOST = None


def subject_hash(subject: str) -> str:
    """Keyed hash of an erased id for the audit trail and the suppression list.

    HMAC-SHA256 under ``AUDIT_HASH_KEY``; one C call, as it runs per event
    once anything is suppressed.
    """
    return hmac.digest(AUDIT_HASH_KEY, subject.encode(), "sha256").hex()


def _suppressed(role: str, record: Any) -> bool:
    """Whether an event's customer (or anonymous id) was erased; such events are counted.

    Nothing is hashed until the first erasure: the suppression list of the
    worker's partitions is in memory (:data:`suppressed_hashes`), and each id's
    verdict is remembered.
    """
    if not suppressed_hashes:
        return False
    subject = record.customer_id or getattr(record, "anonymous_id", None)
    if subject is None:
        return False
    try:
        hashed = _verdicts[subject]
    except KeyError:
        if len(_verdicts) >= VERDICTS_MAX:
            _verdicts.clear()
        hashed = subject_hash(str(subject))
        hashed = _verdicts[subject] = hashed if hashed in suppressed_hashes else None
    if hashed is None:
        return False
    expires = suppressed_hashes.get(hashed)
    if expires is not None and now_ms() >= expires:
        return False
    metrics.child(metrics.suppressed_events, role).inc()
    return True


@suppressed_table.on_recover
async def _load_suppressed() -> None:
    # After every rebalance: the suppression list of the partitions now owned.
    suppressed_hashes.clear()
    _verdicts.clear()
    for hashed, entry in suppressed_table.items():
        if still_suppressed(entry, now_ms()):
            suppressed_hashes[hashed] = entry.get("expires_at_ms")


def _suppress(subject: str, event: Any, erased_at_ms: int) -> None:
    """Add an id's keyed hash to the suppression list, in the id's partition."""
    hashed = subject_hash(subject)
    entry = suppression_entry(erased_at_ms, SUPPRESSION_EXPIRY_MS)
    with partition_of(event):
        suppressed_table[hashed] = entry
    suppressed_hashes[hashed] = entry["expires_at_ms"]
    _verdicts.clear()


def _index_buckets(partition: int, event: Any) -> list[tuple[str, Any]]:
    """Every bucket of the partition's deadline and held-event indexes, with its entries."""
    prefixes = (f"{partition}:", f"h{partition}:")
    with partition_of(event):
        keys = [key for key in deadlines_table.keys() if key.startswith(prefixes)]
    return [(key, deadline_cache.get(key, event)) for key in keys]


def _erase_state(
    customer_id: str, event: Any
) -> tuple[list[str], dict[str, Any] | None, list[Any]]:
    """Tombstones for everything keyed by, or naming, the customer in their partition.

    Returns what was erased, the profile and the held events as they were.
    The caches are written out first, so the table holds every index bucket
    to scan, and again at the end: erasure does not wait for the commit.
    """
    partition = event.message.partition
    flush_all(CACHES, outbox)
    erased: list[str] = []
    pop_key = population_key(partition)
    population = population_cache.get(pop_key, event) or new_population()
    held = held_cache.get(customer_id, event) or []
    if held:
        population["held_customers"] = max(population.get("held_customers", 0) - 1, 0)
        held_cache.delete_on_commit(customer_id, event)
        erased.append("held_events")
    profile = profile_cache.get(customer_id, event)
    if profile is not None:
        erase_customer(profile, population, new_segmenter())
        profile_cache.delete_on_commit(customer_id, event)
        erased.append("profile")
    # Every index entry naming the customer, stale ones and held-event ones too.
    for key, entries in index_without_customer(_index_buckets(partition, event), customer_id):
        if entries is None:
            deadline_cache.delete_on_commit(key, event)
        else:
            deadline_cache.put(key, entries, event)
        erased.append("deadline_entry")
    population_cache.put(pop_key, population, event)
    flush_all(CACHES, outbox)
    return erased, profile, held


async def _publish_erasure(
    customer_id: str, profile: dict[str, Any] | None, request_id: str, erased_at_ms: int
) -> None:
    """Exits from every segment the customer was in, then ``customer_erased``."""
    topic = segment_changes_topic.get_topic_name()
    await outbox.learn_partitions(topic)
    for change in erasure_changes(customer_id, profile, request_id, erased_at_ms, EXAMPLE_ID_KEY):
        record = SegmentChange(**change)
        outbox.append_keyed(topic, customer_id.encode(), msgspec.json.encode(record))
    outbox.hand_off()


def _purge_local_files(partition: int, purge: list[tuple[Any, str | None]]) -> None:
    """Drop deleted and overwritten values from a partition's RocksDB files.

    ``purge`` lists tables with the key to compact (``None``: all of it).
    A RocksDB delete only adds a tombstone: the old values stay in the write-
    ahead log and the table files until a compaction reaches them, and the
    MANIFEST names each table file's first and last key. So: flush the
    memtable (the WAL behind it is deleted), compact the key's files down to
    the last level, where tombstones and what they cover are dropped, and
    reopen the database, which writes a fresh MANIFEST. The memory store keeps
    nothing on disk.
    """
    for table, key in purge:
        store = table.data
        dbs = getattr(store, "_dbs", None)
        if FORCE_BOTTOMMOST is None or dbs is None or partition not in dbs:
            continue
        started = time.monotonic()
        db = dbs[partition]
        db.flush()
        # A customer's keys: one key's files. The deadline index: all of it (small),
        # as old versions of any bucket may name the customer.
        edge = None if key is None else store._encode_key(key)
        db.compact_range(edge, edge, FORCE_BOTTOMMOST)
        db.close()
        dbs[partition] = store._open_for_partition(partition)
        log.info(
            "erasure purged store table=%s partition=%d seconds=%.3f",
            table.name,
            partition,
            time.monotonic() - started,
        )


def _schedule_roll(tables: Iterable[Any], partition: int) -> None:
    # A later erasure restarts the rounds: its tombstones may be in a newer segment.
    due = time.monotonic() + ROLL_AFTER_S
    for table in tables:
        roll_due[(table.changelog_topic.get_topic_name(), partition)] = (due, 2)


@app.timer(interval=1.0)
async def roll_erased_changelogs() -> None:
    """Append a harmless tombstone to changelog partitions an erasure wrote to (see ROLL_KEY).

    In a quiet partition the erased values, and the erasure's own tombstones
    (keyed by the id), would otherwise stay in the active segment.
    """
    now = time.monotonic()
    due = [(tp, left) for tp, (at, left) in roll_due.items() if at <= now]
    for (topic, partition), left in due:
        # Faust's send path, not the outbox: it fetches the topic's metadata
        # first (the producer may no longer know a changelog's leader).
        try:
            await app.producer.send_and_wait(topic, ROLL_KEY, None, partition, None, None)
        except KafkaError as exc:
            log.warning("erasure roll failed topic=%s partition=%d: %r", topic, partition, exc)
            roll_due[(topic, partition)] = (now + ROLL_AFTER_S, left)
            continue
        if left > 1:
            roll_due[(topic, partition)] = (now + SECOND_ROLL_AFTER_S, left - 1)
        else:
            del roll_due[(topic, partition)]
        log.info("erasure roll topic=%s partition=%d", topic, partition)


@app.agent(erasure_requests_topic)
async def erase_customers(stream: Any) -> None:
    """Right to be forgotten: remove every trace of a customer, tell consumers, audit it."""
    async for event in stream.events():
        message = event.message
        try:
            request = msgspec.json.decode(message.value or b"", type=ErasureRequest)
        except msgspec.DecodeError as exc:
            error = DecodeError("wrong_type", f"not an erasure request: {exc}")
            await _send_dead_letter("erasure_requests", message, error)
            continue
        subject = request.customer_id or request.anonymous_id
        if subject is None or message.key != subject.encode():
            error = DecodeError("key_mismatch", "erasure request must be keyed by its subject id")
            await _send_dead_letter("erasure_requests", message, error)
            continue
        erased_at_ms = now_ms()
        # A batch and an erasure never interleave: neither sees half of the other.
        async with processing:
            if request.customer_id is not None:
                erased, profile, held = _erase_state(request.customer_id, event)
                await _publish_erasure(
                    request.customer_id, profile, request.request_id, erased_at_ms
                )
                erased.append("segment_exits")
                for anonymous_id in erased_aliases(profile, held):
                    # The alias lives in the anonymous id's own partition.
                    alias = ErasureRequest(request_id=request.request_id, anonymous_id=anonymous_id)
                    await erasure_requests_topic.send(
                        key=anonymous_id.encode(), value=msgspec.json.encode(alias)
                    )
                    erased.append("alias")
                purge: list[tuple[Any, str | None]] = [
                    (profiles_table, subject),
                    (held_table, subject),
                    (deadlines_table, None),
                ]
            else:
                erased = []
                with partition_of(event):
                    if identities_table.get(subject) is not None:
                        del identities_table[subject]
                        erased.append("identity")
                purge = [(identities_table, subject)]
            _suppress(subject, event, erased_at_ms)
            erased.append("suppressed")
            _purge_local_files(message.partition, purge)
            _schedule_roll([table for table, _ in purge], message.partition)
        audit = ErasureAudit(
            request_id=request.request_id,
            subject_hash=subject_hash(subject),
            erased=erased,
            erased_at_ms=erased_at_ms,
        )
        await erasure_audit_topic.send(key=None, value=msgspec.json.encode(audit))
        metrics.erasures.labels("customer" if request.customer_id else "alias").inc()
        log.info("erasure done request=%s erased=%s", request.request_id, ",".join(erased))
