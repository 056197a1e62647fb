"""The worker's partition engines: one per owned input partition, over Faust tables.

Each engine (:mod:`models.engine`) reads and writes its partition's state
through write-back caches in front of the Faust tables
(:mod:`streams.state_cache`), and what it returns is sent through the outbox
(:mod:`streams.outbox`): segment changes, triggers, training examples and
re-keyed identity events. Engines are made when a partition is first used and
dropped when it is revoked.

Faust's tables read and write the partition of the *current event*, so each
partition keeps an anchor: the latest event read from it, which state writes
point Faust's context at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import orjson

from models.engine import Outputs, PartitionEngine, PartitionStores
from schemas.decode import DecodeError, dead_letter
from schemas.records import SegmentChange, Trigger
from streams import metrics
from streams.app import app, settings
from streams.internals import aiokafka_producer, partition_of
from streams.model_sync import holder
from streams.outbox import Outbox, RecordTooLargeError
from streams.state_cache import (
    FlushMarker,
    FlushOnCommit,
    TableWriter,
    WriteBackCache,
    flush_all,
)
from streams.tables import (
    deadlines_table,
    held_table,
    identities_table,
    population_table,
    profiles_table,
)
from streams.topics import (
    clickstream_topic,
    dead_letters_topic,
    segment_changes_topic,
    training_examples_topic,
    triggers_topic,
)

log = logging.getLogger(__name__)

ENGINE_CONFIG = settings.engine_config()

# Changelog writes and outputs go to Faust's producer in whole batches
# (streams.outbox), not through Faust's per-message send path.
outbox = Outbox(lambda: aiokafka_producer(app))


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
# Present only while the caches are being written to RocksDB (streams.state_cache).
MARKER = (
    FlushMarker(settings.data_dir / "flush-in-progress") if settings.store == "rocksdb" else None
)
app.sensors.add(FlushOnCommit(list(CACHES), outbox, MARKER))
OUTPUT_TOPICS = (training_examples_topic, segment_changes_topic, triggers_topic, clickstream_topic)


class Anchor:
    """The latest event read from a partition: where Faust's table writes land."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event


class CachedStore:
    """A :class:`models.deadlines.Store` over a write-back cache, in one partition."""

    def __init__(self, cache: WriteBackCache, anchor: Anchor) -> None:
        self.cache = cache
        self.anchor = anchor

    def get(self, key: str) -> Any:
        return self.cache.get(key, self.anchor.event)

    def put(self, key: str, value: Any) -> None:
        self.cache.put(key, value, self.anchor.event)

    def delete(self, key: str) -> None:
        # At the commit, like the writes: state derived from one batch reaches
        # the table together.
        self.cache.delete_on_commit(key, self.anchor.event)

    def keys_with_prefix(self, prefixes: tuple[str, ...]) -> list[str]:
        """Every key of the partition starting with one of ``prefixes`` (erasure only).

        The caches are written out first, so the table holds every key.
        """
        flush_caches()
        with partition_of(self.anchor.event):
            return [key for key in self.cache.table.keys() if key.startswith(prefixes)]


class TableStore:
    """A store writing a Faust table directly (identity state: small and rare)."""

    def __init__(self, table: Any, anchor: Anchor) -> None:
        self.table = table
        self.anchor = anchor

    def get(self, key: str) -> Any:
        with partition_of(self.anchor.event):
            return self.table.get(key)

    def put(self, key: str, value: Any) -> None:
        with partition_of(self.anchor.event):
            self.table[key] = value

    def delete(self, key: str) -> None:
        with partition_of(self.anchor.event):
            if self.table.get(key) is not None:
                del self.table[key]


engines: dict[int, PartitionEngine] = {}
anchors: dict[int, Anchor] = {}
# A batch, the idle-time advance and an erasure never interleave.
processing = asyncio.Lock()


def engine_for(partition: int, event: Any) -> PartitionEngine:
    """The engine of an owned partition; ``event`` was just read from it."""
    anchor = anchors.get(partition)
    if anchor is None:
        anchor = anchors[partition] = Anchor(event)
        stores = PartitionStores(
            profiles=CachedStore(profile_cache, anchor),
            population=CachedStore(population_cache, anchor),
            held=CachedStore(held_cache, anchor),
            deadlines=CachedStore(deadline_cache, anchor),
            identities=TableStore(identities_table, anchor),
        )
        engines[partition] = PartitionEngine(
            partition, stores, ENGINE_CONFIG, scorer=lambda: holder.bundle
        )
    else:
        anchor.event = event
    return engines[partition]


def forget(partitions: Iterable[int]) -> None:
    """Partitions were revoked: their state is written, then engines and caches dropped."""
    gone = set(partitions)
    for partition in gone:
        engines.pop(partition, None)
        anchors.pop(partition, None)
    try:
        flush_caches()
    except Exception:  # a store already closed, or the producer stopping
        log.exception("flush on revoke failed; those events will be consumed again")
        outbox.discard()
    for cache in CACHES:
        cache.discard_partitions(gone)


def flush_caches() -> int:
    """Write every cache back and hand the changelog records to the producer."""
    return flush_all(CACHES, outbox, MARKER)


def now_ms() -> int:
    """Wall clock, only to reject events from the future and stamp records."""
    return time.time_ns() // 1_000_000


def position(message: Any) -> str:
    """Where an input record is, for logs: topic, partition and offset, never its content."""
    return f"{message.topic}/{message.partition}@{message.offset}"


async def send_or_stop(topic: Any, key: bytes | None, value: bytes, origin: str) -> None:
    """Send a record an input gave rise to, through the outbox.

    Delivered before the offset commit that covers the input, or the worker
    stops without that commit (:mod:`streams.outbox`) and the input is
    consumed again. A record that can never be sent stops it too, naming
    ``origin`` (an input position): skipping it would acknowledge an event
    whose output is lost.
    """
    name = topic.get_topic_name()
    await outbox.learn_partitions(name)
    try:
        outbox.append_keyed(name, key, value, origin=origin)
    except RecordTooLargeError as exc:
        outbox.stop(exc)
        raise


async def publish(outputs: Outputs, origin: str) -> None:
    """Send what engines returned, count it, and hand the batch to the producer."""
    for topic in OUTPUT_TOPICS:
        await outbox.learn_partitions(topic.get_topic_name())
    for fields in outputs.rekeyed:
        # Re-keyed by customer_id, so it lands beside the customer's state.
        key = str(fields["customer_id"]).encode()
        await send_or_stop(clickstream_topic, key, orjson.dumps(fields), origin)
    examples_topic = training_examples_topic.get_topic_name()
    for example in outputs.examples:
        outbox.append_keyed(examples_topic, None, orjson.dumps(example))
        metrics.child(metrics.training_examples_sent, example["kind"]).inc()
    publish_segments(outputs)
    count(outputs)
    if not settings.write_back:
        flush_all(CACHES, marker=MARKER)
    outbox.hand_off()


def publish_segments(outputs: Outputs) -> None:
    """Append segment changes and triggers to the outbox, keyed by customer."""
    sent_ms = now_ms()
    changes_topic = segment_changes_topic.get_topic_name()
    for change in outputs.changes:
        record = SegmentChange(**change)
        outbox.append_keyed(changes_topic, record.customer_id.encode(), msgspec.json.encode(record))
        # str(): the label prometheus-client gives an exit (None) itself.
        metrics.child(metrics.segment_changes, record.dimension, str(record.to_segment)).inc()
        metrics.change_lag.observe(max(sent_ms - record.ts, 0) / 1000)
    fired_topic = triggers_topic.get_topic_name()
    for trigger in outputs.triggers:
        fired = Trigger(**trigger)
        outbox.append_keyed(fired_topic, fired.customer_id.encode(), msgspec.json.encode(fired))
        metrics.child(metrics.triggers, fired.kind).inc()


def count(outputs: Outputs) -> None:
    """The engine's counts as Prometheus metrics."""
    for (what, label), n in outputs.counts.items():
        if what == "processed":
            metrics.child(metrics.events_processed, label).inc(n)
        elif what == "duplicate":
            metrics.child(metrics.duplicate_events, label).inc(n)
        elif what == "stale":
            metrics.child(metrics.stale_events, label).inc(n)
        elif what == "late":
            metrics.child(metrics.late_events, label).inc(n)
        elif what == "held":
            metrics.child(metrics.held_events, label).inc(n)
        elif what == "forced":
            metrics.held_released_early.inc(n)
        elif what == "anonymous":
            metrics.anonymous_events.labels(label).inc(n)
        elif what == "historical_trigger":
            metrics.child(metrics.historical_triggers, label).inc(n)
        elif what == "capped_trigger":
            metrics.child(metrics.capped_triggers, label).inc(n)


async def send_dead_letter(role: str, message: Any, exc: DecodeError) -> None:
    """Route an input record that could not be decoded to the dead-letter topic."""
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
    value = msgspec.json.encode(record)
    await send_or_stop(dead_letters_topic, letter_key, value, position(message))
    metrics.decode_failures.labels(role, exc.kind).inc()
    metrics.dead_letters.labels(role).inc()
    log.info(
        "dead letter topic=%s partition=%s offset=%s reason=%s",
        message.topic,
        message.partition,
        message.offset,
        exc.kind,
    )
