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
import hashlib
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
    fire_deadlines,
    new_population,
    refile_deadline,
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
from streams.outbox import Outbox
from streams.state_cache import FlushOnCommit, TableWriter, WriteBackCache, flush_all, partition_of
from streams.tables import (
    deadlines_table,
    held_table,
    identities_table,
    population_key,
    population_table,
    profiles_table,
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
            await _process_batch(stream, batch)


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
    )
    await dead_letters_topic.send(key=message.key, value=msgspec.json.encode(record))
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
        await clickstream_topic.send(
            key=str(fields["customer_id"]).encode(), value=orjson.dumps(fields)
        )


def subject_hash(subject: str) -> str:
    """Keyed hash of an erased id for the audit trail (no personal data)."""
    key = settings.audit_hash_key.get_secret_value().encode()
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


@app.agent(erasure_requests_topic)
async def erase_customers(stream: Any) -> None:
    """Right to be forgotten: remove every trace of a customer, then audit it."""
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
        erased: list[str] = []
        if request.customer_id is not None:
            if held_cache.get(request.customer_id, event):
                # Events not applied yet: the index entry is ignored once they are gone.
                pop_key = population_key(message.partition)
                population = population_cache.get(pop_key, event) or new_population()
                population["held_customers"] = max(population.get("held_customers", 0) - 1, 0)
                population_cache.put(pop_key, population, event)
                held_cache.delete(request.customer_id, event)
                erased.append("held_events")
            profile = profile_cache.get(request.customer_id, event)
            if profile is not None:
                pop_key = population_key(message.partition)
                population = population_cache.get(pop_key, event) or new_population()
                erase_customer(profile, population, new_segmenter())
                population_cache.put(pop_key, population, event)
                if profile.get("deadline_ms") is not None:
                    index = deadline_index(message.partition, event)
                    index.unschedule(request.customer_id, profile["deadline_ms"])
                profile_cache.delete(request.customer_id, event)
                erased.append("profile")
                for anonymous_id in profile.get("anonymous_ids", []):
                    # The alias lives in the anonymous id's own partition.
                    alias = ErasureRequest(request_id=request.request_id, anonymous_id=anonymous_id)
                    await erasure_requests_topic.send(
                        key=anonymous_id.encode(), value=msgspec.json.encode(alias)
                    )
                    erased.append("alias")
        else:
            if identities_table.get(str(request.anonymous_id)) is not None:
                del identities_table[str(request.anonymous_id)]
                erased.append("identity")
        audit = ErasureAudit(
            request_id=request.request_id,
            subject_hash=subject_hash(subject),
            erased=erased,
            erased_at_ms=now_ms(),
        )
        await erasure_audit_topic.send(key=None, value=msgspec.json.encode(audit))
        metrics.erasures.labels("customer" if request.customer_id else "alias").inc()
        log.info("erasure done request=%s erased=%s", request.request_id, ",".join(erased))
