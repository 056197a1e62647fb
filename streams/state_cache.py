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

The tables of one partition (profiles, population, deadlines, held events)
are separate RocksDB databases, and a process can die between writing one
and the next. So a commit's writes go in two steps (:func:`flush_all`):
every value is encoded first, then a marker file names the partitions being
written (:class:`FlushMarker`), each table partition is written in one
RocksDB write batch, the marker is removed, and only then are the changelog
records handed to the producer. A worker that finds the marker at start was
killed in the middle of those writes: its local files for those partitions
may hold one table's new state beside another's old one, so they are
removed before Faust opens them (:func:`recover_interrupted_flush`) and
restored from the changelog, which holds nothing of the interrupted commit.

Clean entries stay as a bounded LRU read cache, so a busy customer is not
decoded from RocksDB on every batch.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from faust.sensors.base import Sensor
from faust.types import TP
from rocksdict import WriteBatch

from streams.internals import (
    key_encoder,
    open_rocksdb_partitions,
    partition_of,
    rocksdb_partition,
    value_encoder,
)
from streams.outbox import Outbox

log = logging.getLogger(__name__)

# The cached value of a key whose removal waits for the next commit.
_DELETED: Any = object()


class PreparedWrite(Protocol):
    """A cache's dirty entries of one partition, encoded and ready to write."""

    @property
    def partition(self) -> int:
        """The partition of every entry."""

    @property
    def count(self) -> int:
        """How many entries."""

    def store(self) -> None:
        """Write the entries to the partition's store."""

    def send(self) -> None:
        """Hand the entries' changelog records to the outbox (if any)."""


class Writer(Protocol):
    """Prepares a cache's dirty entries of one partition (``None``: delete)."""

    def prepare(self, partition: int, items: list[tuple[str, Any]]) -> PreparedWrite: ...


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
        return flush_all([self])

    def prepare_flush(self) -> list[PreparedWrite]:
        """Every dirty entry, encoded per partition; the cache is left as it is.

        The entries are written when the caller stores what is returned, and
        count as written once it calls :meth:`written`; nothing may use the
        cache in between (:func:`flush_all` does it all without yielding to
        the event loop). A store that raises leaves them dirty, to be
        written at the next flush.
        """
        prepared: list[PreparedWrite] = []
        for partition, keys in self._dirty.items():
            if not keys:
                continue
            items = [(key, self._value_to_write(key)) for key in keys]
            if self.writer is not None:
                prepared.append(self.writer.prepare(partition, items))
            else:
                anchor = self._anchor[partition]
                prepared.append(_ThroughTable(self.table, partition, anchor, items))
        return prepared

    def written(self) -> None:
        """What :meth:`prepare_flush` returned is stored: the entries are clean now."""
        for keys in self._dirty.values():
            for key in keys:
                # A key removed on commit leaves the cache now.
                if self._values[key][1] is _DELETED:
                    del self._values[key]
            keys.clear()
        self._anchor.clear()
        self._evict()

    def _value_to_write(self, key: str) -> Any:
        value = self._values[key][1]
        return None if value is _DELETED else value  # None deletes

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


@dataclass(slots=True)
class _ThroughTable:
    """Faust's own path: a store write and a changelog record per key."""

    table: Any
    partition: int
    anchor: Any
    items: list[tuple[str, Any]]

    @property
    def count(self) -> int:
        return len(self.items)

    def store(self) -> None:
        with partition_of(self.anchor):
            for key, value in self.items:
                if value is not None:
                    self.table[key] = value
                elif self.table.get(key) is not None:
                    del self.table[key]

    def send(self) -> None:
        """Faust sent the records as it wrote them."""


class FlushMarker:
    """A file naming the partitions whose tables are being written, while they are.

    Parameters
    ----------
    path
        The marker file, beside the worker's RocksDB directories.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Partitions of a write that raised: named until the next start.
        self._failed: set[int] = set()

    @contextmanager
    def covering(self, partitions: Iterable[int]) -> Iterator[None]:
        """The marker names ``partitions`` while the block runs.

        It stays if the process dies in the block. If the block raises, its
        partitions stay named by every later marker of this process and by
        the file left when the block ends, so the next start does not trust
        what was written.
        """
        covered = set(partitions)
        self._write(covered | self._failed)
        try:
            yield
        except BaseException:
            self._failed |= covered
            self._write(self._failed)
            raise
        if self._failed:
            self._write(self._failed)
        else:
            self.path.unlink()

    def _write(self, partitions: set[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(" ".join(str(p) for p in sorted(partitions)) + "\n")

    def interrupted(self) -> list[int] | None:
        """The partitions of a write that did not finish, or ``None``."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        return sorted({int(word) for word in text.split() if word.isdigit()})


def flush_all(
    caches: Iterable[WriteBackCache],
    outbox: Outbox | None = None,
    marker: FlushMarker | None = None,
) -> int:
    """Write every cache back and hand the changelog records to the producer.

    Values are encoded first; the stores are then written with ``marker`` in
    place (the short step a crash must not split unnoticed); the changelog
    records go to the outbox only once every store holds them, so the
    changelog never holds part of a commit whose local writes were cut off.
    """
    caches = list(caches)
    prepared = [write for cache in caches for write in cache.prepare_flush()]
    if prepared:
        covered = (write.partition for write in prepared)
        with marker.covering(covered) if marker is not None else nullcontext():
            for write in prepared:
                write.store()
        for write in prepared:
            write.send()
    for cache in caches:
        cache.written()
    if outbox is not None:
        outbox.hand_off()
    return sum(write.count for write in prepared)


# A table partition's RocksDB directory: "<table>-<partition>.db".
_PARTITION_DB = re.compile(r"^.+-(\d+)\.db$")


def recover_interrupted_flush(marker: FlushMarker, tabledir: Path) -> list[int]:
    """Remove the local tables of partitions a killed worker was writing.

    Call before Faust opens its stores. Faust then restores those partitions
    from their changelog topics: the last commit that finished, whose events'
    offsets are the ones committed, so what came after is consumed again.
    Returns the partitions removed (none without a marker).
    """
    partitions = marker.interrupted()
    if partitions is None:
        return []
    wanted = set(partitions)
    removed = []
    if tabledir.is_dir():
        for path in sorted(tabledir.iterdir()):
            match = _PARTITION_DB.match(path.name)
            if match and path.is_dir() and int(match.group(1)) in wanted:
                shutil.rmtree(path)
                removed.append(path.name)
    log.warning(
        "the last run stopped while writing the tables of partitions %s: removed their "
        "local files (%s) to restore them from the changelog",
        partitions,
        ", ".join(removed) or "none present",
    )
    marker.path.unlink()
    return partitions


class FlushOnCommit(Sensor):
    """Writes the caches back when Faust begins an offset commit.

    ``on_commit_initiated`` runs synchronously before Faust reads which
    offsets are acknowledged, so every offset it then commits has its state
    written; the changelog records are handed to the producer here too, and
    Faust flushes the producer before committing.
    """

    def __init__(
        self,
        caches: list[WriteBackCache],
        outbox: Outbox | None = None,
        marker: FlushMarker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.caches = caches
        self.outbox = outbox
        self.marker = marker

    def on_commit_initiated(self, consumer: Any) -> Any:
        flush_all(self.caches, self.outbox, self.marker)
        return None


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

    def prepare(self, partition: int, items: list[tuple[str, Any]]) -> _EncodedWrite:
        """Encode ``(key, value)`` pairs of one partition with the table's serializers."""
        store = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        encode_key, encode_value = key_encoder(store), value_encoder(store)
        on_delivered = self._persisted.get(partition)
        if on_delivered is None:
            on_delivered = self._persist_offset(store, topic, partition)
            self._persisted[partition] = on_delivered
        encoded = [
            (key, value, encode_key(key), None if value is None else encode_value(value))
            for key, value in items
        ]
        return _EncodedWrite(store, topic, partition, encoded, self.outbox, on_delivered)

    @staticmethod
    def _persist_offset(store: Any, topic: str, partition: int) -> Callable[[int], None]:
        tp = TP(topic, partition)

        def persist(offset: int) -> None:
            open_dbs = open_rocksdb_partitions(store)
            if open_dbs is None or partition in open_dbs:  # not revoked meanwhile
                store.set_persisted_offset(tp, offset)

        return persist


@dataclass(slots=True)
class _EncodedWrite:
    """One table partition's entries, encoded for its store and its changelog:
    ``(key, value, key bytes, value bytes)``, ``None`` values deleting."""

    table_store: Any
    topic: str
    partition: int
    encoded: list[tuple[str, Any, bytes, bytes | None]]
    outbox: Outbox
    on_delivered: Callable[[int], None]

    @property
    def count(self) -> int:
        return len(self.encoded)

    def store(self) -> None:
        """Write the entries: in one RocksDB write batch, or into the memory store."""
        db = rocksdb_partition(self.table_store, self.partition)
        if db is None:
            for key, value, _, _ in self.encoded:
                if value is None:
                    self.table_store.data.pop(key, None)
                else:
                    self.table_store.data[key] = value
            return
        batch = WriteBatch(raw_mode=True)
        for _, _, key_bytes, value_bytes in self.encoded:
            if value_bytes is None:
                batch.delete(key_bytes)
            else:
                batch.put(key_bytes, value_bytes)
        db.write(batch)

    def send(self) -> None:
        """Append the changelog records to the outbox, in the table's partition."""
        topic, partition, on_delivered = self.topic, self.partition, self.on_delivered
        for _, _, key_bytes, value_bytes in self.encoded:
            self.outbox.append(topic, partition, key_bytes, value_bytes, on_delivered)
