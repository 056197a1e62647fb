"""Right to be forgotten in the worker: erasure requests, the suppression list,
and the removal of old values from local files and changelog topics.

An erasure removes the customer from every table (the partition engine's
:meth:`~models.engine.PartitionEngine.erase_customer`: tombstones in each
changelog), publishes an exit per segment and ``customer_erased``, and adds
the id's keyed hash to the suppression list. Then the partition's RocksDB
files are compacted and the changelog partitions are made to roll, so the
old values leave the disk and the broker within the erasure bound (README,
Right to be forgotten).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from aiokafka.errors import KafkaError

from models.pipeline import still_suppressed, suppression_entry
from models.profile import DAY_MS
from schemas.decode import DecodeError
from schemas.records import ErasureAudit, ErasureRequest, SegmentChange
from streams import metrics
from streams.app import app, settings
from streams.engines import (
    engine_for,
    flush_caches,
    now_ms,
    outbox,
    processing,
    send_dead_letter,
)
from streams.internals import (
    key_encoder,
    open_rocksdb_partitions,
    partition_of,
    reopen_rocksdb_partition,
)
from streams.tables import (
    deadlines_table,
    held_table,
    identities_table,
    profiles_table,
    suppressed_table,
)
from streams.topics import erasure_audit_topic, erasure_requests_topic, segment_changes_topic

log = logging.getLogger(__name__)

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


def suppressed(role: str, record: Any) -> bool:
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
        dbs = open_rocksdb_partitions(store)
        if FORCE_BOTTOMMOST is None or dbs is None or partition not in dbs:
            continue
        started = time.monotonic()
        db = dbs[partition]
        db.flush()
        # A customer's keys: one key's files. The deadline index: all of it (small),
        # as old versions of any bucket may name the customer.
        edge = None if key is None else key_encoder(store)(key)
        db.compact_range(edge, edge, FORCE_BOTTOMMOST)
        reopen_rocksdb_partition(store, partition)
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
            await send_dead_letter("erasure_requests", message, error)
            continue
        subject = request.customer_id or request.anonymous_id
        if subject is None or message.key != subject.encode():
            error = DecodeError("key_mismatch", "erasure request must be keyed by its subject id")
            await send_dead_letter("erasure_requests", message, error)
            continue
        erased_at_ms = now_ms()
        # A batch and an erasure never interleave: neither sees half of the other.
        async with processing:
            if request.customer_id is not None:
                erased = await _erase_customer(request, event, erased_at_ms)
                purge: list[tuple[Any, str | None]] = [
                    (profiles_table, subject),
                    (held_table, subject),
                    (deadlines_table, None),
                ]
            else:
                erased = engine_for(message.partition, event).erase_alias(subject)
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


async def _erase_customer(request: ErasureRequest, event: Any, erased_at_ms: int) -> list[str]:
    """The customer's state in their partition, the exits and ``customer_erased``, the aliases.

    The caches are written out before and after: erasure does not wait for
    the commit.
    """
    customer_id = str(request.customer_id)
    flush_caches()
    engine = engine_for(event.message.partition, event)
    outputs, erased = engine.erase_customer(customer_id, request.request_id, erased_at_ms)
    flush_caches()
    topic = segment_changes_topic.get_topic_name()
    await outbox.learn_partitions(topic)
    for change in outputs.changes:
        record = SegmentChange(**change)
        outbox.append_keyed(topic, customer_id.encode(), msgspec.json.encode(record))
    outbox.hand_off()
    erased.append("segment_exits")
    for anonymous_id in outputs.aliases:
        # The alias lives in the anonymous id's own partition.
        alias = ErasureRequest(request_id=request.request_id, anonymous_id=anonymous_id)
        await erasure_requests_topic.send(
            key=anonymous_id.encode(), value=msgspec.json.encode(alias)
        )
        erased.append("alias")
    return erased
