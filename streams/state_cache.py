"""A write-back cache in front of Faust tables: one changelog record per
customer per commit, not per event.

Faust's usual pattern writes the table — a RocksDB put and a changelog
record — for every event. Here agents read and write profiles in this cache;
dirty entries are written to the table when Faust starts an offset commit
(:class:`FlushOnCommit`, a Faust sensor). Faust then flushes its producer and
commits offsets, so every committed offset has its state in the changelog:

* crash (kill -9): unflushed entries are lost *and* their offsets were never
  committed, so the events are consumed again — their effect is rebuilt, and
  any part that had reached the changelog is dropped by event-id dedup;
* rebalance: Faust commits before it revokes partitions, and the caches are
  written at that commit (on the event loop, like every write — Faust's
  rebalance-start hook runs in its consumer thread, where a write would race
  the agent); the new owner restores the table from the changelog, and
  anything it consumes again is dropped by dedup.

Clean entries stay as a bounded LRU read cache, so a busy customer is not
decoded from RocksDB on every batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from faust.sensors.base import Sensor
from faust.types import TP

from streams.internals import (
    key_encoder,
    open_rocksdb_partitions,
    partition_of,
    rocksdb_partition,
    value_encoder,
)
from streams.outbox import Outbox

# The cached value of a key whose removal waits for the next commit.
_DELETED: Any = object()


class Writer(Protocol):
    """Writes a cache's dirty entries of one partition (``None``: delete)."""

    def write(self, partition: int, items: list[tuple[str, Any]]) -> None: ...


class WriteBackCache:
    """Per-key values of one Faust table, written back on commit.

    Parameters
    ----------
    table
        The Faust table behind the cache.
    max_clean
        Clean (already written) entries kept for reads; dirty ones are never
        evicted before they are written.
    """

    def __init__(self, table: Any, max_clean: int, writer: Writer | None = None) -> None:
        self.table = table
        self.max_clean = max_clean
        self.writer = writer
        self._values: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._dirty: dict[int, set[str]] = {}
        self._anchor: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._values)

    @property
    def dirty_count(self) -> int:
        """Entries waiting to be written."""
        return sum(len(keys) for keys in self._dirty.values())

    def get(self, key: str, event: Any) -> Any:
        """The value of ``key``; ``event`` is a message of the key's partition."""
        cached = self._values.get(key)
        if cached is not None:
            self._values.move_to_end(key)
            return None if cached[1] is _DELETED else cached[1]
        with partition_of(event):
            value = self.table.get(key)
        if value is not None:
            self._values[key] = (event.message.partition, value)
        return value

    def peek(self, key: str) -> Any:
        """The cached value of ``key`` without touching the table, or ``None``."""
        cached = self._values.get(key)
        return None if cached is None or cached[1] is _DELETED else cached[1]

    def put(self, key: str, value: Any, event: Any) -> None:
        """Set ``key``; it is written to the table at the next commit."""
        partition = event.message.partition
        self._values[key] = (partition, value)
        self._values.move_to_end(key)
        self._dirty.setdefault(partition, set()).add(key)
        # Any event of the partition will do for the write; keep the latest.
        self._anchor[partition] = event

    def delete_on_commit(self, key: str, event: Any) -> None:
        """Remove ``key`` at the next commit, together with the rest of the state.

        State derived from one batch must reach the table together: a key
        removed at once while the writes beside it wait for the commit is
        gone after a crash although they are lost (the deadline index would
        lose due entries whose customers' updates were never written).
        """
        self.put(key, _DELETED, event)

    def delete(self, key: str, event: Any) -> None:
        """Remove ``key`` from cache and table now (erasure must not wait)."""
        partition = event.message.partition
        self._values.pop(key, None)
        self._dirty.get(partition, set()).discard(key)
        with partition_of(event):
            if self.table.get(key) is not None:
                del self.table[key]

    def flush(self) -> int:
        """Write every dirty entry to the table; returns how many were written."""
        written = 0
        for partition, keys in self._dirty.items():
            if not keys:
                continue
            items = [(key, self._value_to_write(key)) for key in keys]
            if self.writer is not None:
                self.writer.write(partition, items)
            else:
                self._write_through_table(self._anchor[partition], items)
            written += len(items)
            keys.clear()
        self._anchor.clear()
        self._evict()
        return written

    def _value_to_write(self, key: str) -> Any:
        # ``None`` deletes; a key removed on commit leaves the cache now.
        value = self._values[key][1]
        if value is _DELETED:
            del self._values[key]
            return None
        return value

    def _write_through_table(self, anchor: Any, items: list[tuple[str, Any]]) -> None:
        # Faust's own path: a store write and a changelog record per key.
        with partition_of(anchor):
            for key, value in items:
                if value is not None:
                    self.table[key] = value
                elif self.table.get(key) is not None:
                    del self.table[key]

    def discard_partitions(self, partitions: Iterable[int]) -> None:
        """Forget everything of partitions this worker no longer owns."""
        gone = set(partitions)
        for partition in gone:
            self._dirty.pop(partition, None)
            self._anchor.pop(partition, None)
        for key in [k for k, (p, _) in self._values.items() if p in gone]:
            del self._values[key]

    def _evict(self) -> None:
        dirty = set().union(*self._dirty.values()) if self._dirty else set()
        excess = len(self._values) - self.max_clean - len(dirty)
        if excess <= 0:
            return
        for key in list(self._values):
            if excess <= 0:
                break
            if key not in dirty:
                del self._values[key]
                excess -= 1


class FlushOnCommit(Sensor):
    """Writes the caches back when Faust begins an offset commit.

    ``on_commit_initiated`` runs synchronously before Faust reads which
    offsets are acknowledged, so every offset it then commits has its state
    written; the changelog records are handed to the producer here too, and
    Faust flushes the producer before committing.
    """

    def __init__(
        self, caches: list[WriteBackCache], outbox: Outbox | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.caches = caches
        self.outbox = outbox

    def on_commit_initiated(self, consumer: Any) -> Any:
        flush_all(self.caches, self.outbox)
        return None


def flush_all(caches: Iterable[WriteBackCache], outbox: Outbox | None = None) -> int:
    """Write every cache back and hand the changelog records to the producer."""
    written = sum(cache.flush() for cache in caches)
    if outbox is not None:
        outbox.hand_off()
    return written


class TableWriter:
    """Writes a Faust table's entries as Faust does, but sends through an outbox.

    Each entry goes to the partition's store (RocksDB, or the memory store's
    dict) and, encoded with the table's own serializers, to the table's
    changelog topic in the same partition — the record Faust's recovery and
    standby replicas read back. The changelog offset the store has durably
    behind it (Faust's "persisted offset", where a restart resumes reading
    the changelog) is set when the broker acknowledges the batch, as Faust
    does for its own changelog records.
    """

    def __init__(self, table: Any, outbox: Outbox) -> None:
        self.table = table
        self.outbox = outbox
        self._persisted: dict[int, Callable[[int], None]] = {}

    def write(self, partition: int, items: list[tuple[str, Any]]) -> None:
        """Write ``(key, value)`` pairs of one partition; ``None`` deletes the key."""
        store = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        db = rocksdb_partition(store, partition)
        encode_key, encode_value = key_encoder(store), value_encoder(store)
        on_delivered = self._persisted.get(partition)
        if on_delivered is None:
            on_delivered = self._persist_offset(store, topic, partition)
            self._persisted[partition] = on_delivered
        for key, value in items:
            key_bytes = encode_key(key)
            value_bytes = None if value is None else encode_value(value)
            if db is not None:
                if value_bytes is None:
                    db.delete(key_bytes)
                else:
                    db.put(key_bytes, value_bytes)
            elif value is None:
                store.data.pop(key, None)
            else:
                store.data[key] = value
            self.outbox.append(topic, partition, key_bytes, value_bytes, on_delivered)

    @staticmethod
    def _persist_offset(store: Any, topic: str, partition: int) -> Callable[[int], None]:
        tp = TP(topic, partition)

        def persist(offset: int) -> None:
            open_dbs = open_rocksdb_partitions(store)
            if open_dbs is None or partition in open_dbs:  # not revoked meanwhile
                store.set_persisted_offset(tp, offset)

        return persist
