"""Faust agents: decode, call the pure logic in ``models``, write state, send.

Agents stay thin; every rule lives in ``models`` and ``schemas``.

``update_profiles`` reads the three touchpoint topics as one stream, in
batches (``stream.take_events``):

    raw bytes ─ decode_event ─┬─ DecodeError ──► dead-letters topic (+ metric)
                              ├─ anonymous / identify ──► identities_table,
                              │                           re-issued to clickstream
                              └─ record ──► grouped by customer, in event time
                                   ──► update_customer (profile + population)
                                   ──► write-back cache ──(on commit)──► tables

State is written to the tables once per customer per offset commit, not
once per event (:mod:`streams.state_cache`): Faust writes the caches back
when a commit begins and commits only offsets whose state is written, so a
crash replays exactly the events whose effect was lost — and per-customer
deduplication drops any whose effect was not.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import defaultdict
from typing import Any

import msgspec
import orjson
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
from streams.state_cache import FlushOnCommit, WriteBackCache, partition_of
from streams.tables import (
    deadlines_table,
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

profile_cache = WriteBackCache(profiles_table, max_clean=settings.profile_cache_size)
population_cache = WriteBackCache(population_table, max_clean=settings.input_partitions * 2)
deadline_cache = WriteBackCache(deadlines_table, max_clean=settings.input_partitions * 64)
CACHES = (profile_cache, population_cache, deadline_cache)
app.sensors.add(FlushOnCommit(list(CACHES)))


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


def new_moments() -> Moments:
    """Collects a batch's model moments, scored with the newest model snapshot."""
    return Moments(
        scorer=holder.bundle,
        horizon_ms=HORIZON_MS,
        profile_config=PROFILE_CONFIG,
        id_key=EXAMPLE_ID_KEY,
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
        await _process_batch(stream, batch)


class InputWatermarks:
    """Per partition, the event time up to which every input topic has been read.

    A worker reads the three touchpoint topics at their own pace: in a
    backfill, clicks can run hours of event time ahead of orders. Each topic
    partition's frontier is the latest event time read from it; the
    partition's watermark is the smallest frontier. A topic partition that
    has had nothing new to read for ``idle_s`` seconds of wall-clock time
    (a quiet support topic, say) stops holding the others back — the only
    use of wall-clock time here, as in Flink's idleness.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.frontier: dict[tuple[str, int], int] = {}
        self.caught_up_since: dict[tuple[str, int], float | None] = {}

    def observe(self, message: Any, ts: int) -> None:
        key = (message.topic, message.partition)
        self.frontier[key] = max(self.frontier.get(key, ts), ts)
        highwater = app.consumer.highwater(message.tp) if app.consumer else None
        caught_up = highwater is not None and message.offset + 1 >= highwater
        # Idle means caught up with nothing new for idle_s: every message
        # restarts the clock.
        self.caught_up_since[key] = time.monotonic() if caught_up else None

    async def watermark(self, partition: int) -> int:
        """The partition's input watermark; 0 while an input may still bring older data."""
        now = time.monotonic()
        frontiers: list[int] = []
        holding: list[int] = []
        for topic in ROLE_BY_TOPIC:
            key = (topic, partition)
            since = self.caught_up_since.get(key)
            idle = since is not None and now - since >= self.idle_s
            if key in self.frontier:
                frontiers.append(self.frontier[key])
                if not idle:
                    holding.append(self.frontier[key])
            elif not idle:
                # Never read from in this process: unread data, or an empty
                # partition whose idleness clock starts now.
                await self._start_idle_clock_if_empty(key)
                return 0
        if not frontiers:
            return 0
        return min(holding) if holding else max(frontiers)

    async def _start_idle_clock_if_empty(self, key: tuple[str, int]) -> None:
        if self.caught_up_since.get(key) is not None or app.consumer is None:
            return
        tp = TP(*key)
        highwater = app.consumer.highwater(tp)
        position = await app.consumer.position(tp)
        if highwater is not None and position is not None and position >= highwater:
            self.caught_up_since[key] = time.monotonic()


input_watermarks = InputWatermarks(settings.input_idle_s)


async def _process_batch(stream: Any, batch: list[Any]) -> None:
    # The watermark is what was read *before* this batch: every event of a
    # customer up to it has been applied already.
    watermark_before = {
        p: await input_watermarks.watermark(p) for p in {e.message.partition for e in batch}
    }
    by_customer: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    received_ms = now_ms()
    for event in batch:
        message = event.message
        role = ROLE_BY_TOPIC[message.topic]
        try:
            record = decode_event(role, message.key, message.value, LIMITS, now_ms())
        except DecodeError as exc:
            await _send_dead_letter(role, message, exc)
            continue
        metrics.events_consumed.labels(role, record.type).inc()
        metrics.event_lag.labels(role).observe(max(received_ms - int(record.ts), 0) / 1000)
        input_watermarks.observe(message, int(record.ts))
        if isinstance(record, ClickEvent) and (
            record.customer_id is None or record.type == "identify"
        ):
            await _stitch_identity(stream, event, record)
            continue
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        by_customer[str(record.customer_id)].append((fields, event))
    # by_customer: {customer_id: [(event fields, faust event), ...]} in arrival order

    moments = new_moments()
    segmenter = new_segmenter()
    anchors: dict[int, Any] = {}
    for customer_id, items in by_customer.items():
        items.sort(key=lambda item: (item[0]["ts"], item[0]["event_id"]))
        source = items[-1][1]
        partition = source.message.partition
        pop_key = population_key(partition)
        population = population_cache.get(pop_key, source) or new_population()
        profile, outcomes = update_customer(
            profile_cache.get(customer_id, source),
            [fields for fields, _ in items],
            population,
            PROFILE_CONFIG,
            compound,
            watermark_before[partition],
            customer_id,
            moments,
            segmenter,
        )
        anchors[partition] = source
        population["watermark_ms"] = max(population.get("watermark_ms", 0), items[-1][0]["ts"])
        for (fields, _), outcome in zip(items, outcomes, strict=True):
            if outcome == "duplicate":
                metrics.duplicate_events.labels(fields["topic"]).inc()
            elif outcome == "late":
                metrics.late_events.labels(fields["topic"]).inc()
        if any(outcome != "duplicate" for outcome in outcomes):
            index = deadline_index(partition, source)
            refile_deadline(index, customer_id, profile, moments, segmenter)
            profile_cache.put(customer_id, profile, source)
            population_cache.put(pop_key, population, source)
    for partition, anchor in anchors.items():
        # Customers who went quiet change state as the watermark passes their deadlines.
        watermark = await input_watermarks.watermark(partition)
        pop_key = population_key(partition)
        population = population_cache.get(pop_key, anchor) or new_population()
        due = fire_deadlines(
            deadline_index(partition, anchor),
            watermark,
            lambda customer_id, anchor=anchor: profile_cache.get(customer_id, anchor),
            moments,
            segmenter,
            population,
        )
        for customer_id, profile in due:
            profile_cache.put(customer_id, profile, anchor)
        if due:
            population_cache.put(pop_key, population, anchor)
    for example in moments.examples:
        training_examples_topic.send_soon(value=orjson.dumps(example))
        metrics.training_examples_sent.labels(example["kind"]).inc()
    publish_segments(segmenter)
    if not settings.write_back:
        for cache in CACHES:
            cache.flush()


def publish_segments(segmenter: Segmenter) -> None:
    """Send a batch's segment changes and triggers, keyed by customer."""
    sent_ms = now_ms()
    for change in segmenter.changes:
        record = SegmentChange(**change)
        segment_changes_topic.send_soon(
            key=record.customer_id.encode(), value=msgspec.json.encode(record)
        )
        metrics.segment_changes.labels(record.dimension, record.to_segment).inc()
        metrics.change_lag.observe(max(sent_ms - record.ts, 0) / 1000)
    for trigger in segmenter.triggers:
        fired = Trigger(**trigger)
        triggers_topic.send_soon(key=fired.customer_id.encode(), value=msgspec.json.encode(fired))
        metrics.triggers.labels(fired.kind).inc()


@app.on_partitions_revoked.connect
async def _forget_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    # Written when the rebalance started; a batch that finished since is
    # written now, then the revoked partitions' entries are forgotten.
    partitions = {tp.partition for tp in revoked if tp.topic in ROLE_BY_TOPIC}
    for cache in CACHES:
        try:
            cache.flush()
        except Exception:  # a store already closed for revoked partitions
            log.exception("flush on revoke failed; those events will be consumed again")
        cache.discard_partitions(partitions)


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
