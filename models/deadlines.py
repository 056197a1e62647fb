"""An index of due deadlines per partition, driven by the event-time watermark.

A customer who goes quiet still changes state as time passes (a churn label
resolves; later, a lifecycle stage moves). Scanning every customer on each
tick would cost O(customers); instead each deadline is filed in a bucket of
``bucket_ms`` of event time, keyed ``"<partition>:<bucket>"``, and when the
partition's watermark advances only the buckets it passed are read.

Entries are never removed early: a deadline that no longer applies (the
customer acted, or was erased) is filed again or ignored when it fires —
the caller checks the customer's own state. The store is anything with
``get``/``put``/``delete`` by key: a dict offline, a write-back cache over
a Faust table in the worker, so the index moves and recovers with its
partition like the profiles do.

>>> store = DictStore()
>>> index = DeadlineIndex(store, partition=0, bucket_ms=100)
>>> index.schedule("c1", 250); index.schedule("c2", 420)
>>> index.pop_due(300)
[(250, 'c1')]
>>> index.pop_due(1000), [key for key in store.data if not key.endswith(":from")]
([(420, 'c2')], [])
"""

from __future__ import annotations

from typing import Any, Protocol

from models.state import DeadlineBucket


class Store(Protocol):
    """Key-value access to one partition's state."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class ScannableStore(Store, Protocol):
    """A :class:`Store` that can also list its keys (erasure scans the indexes)."""

    def keys_with_prefix(self, prefixes: tuple[str, ...]) -> list[str]: ...


class DictStore:
    """A :class:`Store` over a plain dict (offline runs, tests)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys_with_prefix(self, prefixes: tuple[str, ...]) -> list[str]:
        return [key for key in self.data if key.startswith(prefixes)]


class DeadlineIndex:
    """Deadlines of one partition's customers, filed by event-time bucket.

    The index's own bookkeeping — the oldest bucket that may hold entries —
    lives in the store under ``"<partition>:from"`` (both kinds of entry are
    declared in :mod:`models.state`).
    """

    def __init__(self, store: Store, partition: int, bucket_ms: int, namespace: str = "") -> None:
        self.store = store
        self.partition = partition
        self.bucket_ms = bucket_ms
        # Several indexes can share one store: "" for customers' deadlines,
        # "h" for held events (models.reorder).
        self.namespace = namespace
        # A time no entry is due before (floor_ms), once read. The index is
        # its partition's only writer while it lives, and taking entries out
        # (erasure) leaves it a lower bound.
        self._floor: int | None = None
        self._floor_read = False

    def _key(self, bucket: int) -> str:
        return f"{self.namespace}{self.partition}:{bucket}"

    @property
    def _from_key(self) -> str:
        return f"{self.namespace}{self.partition}:from"

    def schedule(self, customer_id: str, due_ms: int) -> None:
        """File ``customer_id`` to be looked at once the watermark reaches ``due_ms``."""
        bucket = due_ms // self.bucket_ms
        key = self._key(bucket)
        entries: DeadlineBucket = list(self.store.get(key) or [])
        entries.append([due_ms, customer_id])
        self.store.put(key, entries)
        if self._floor_read and (self._floor is None or due_ms < self._floor):
            self._floor = due_ms
        oldest = self.store.get(self._from_key)
        if oldest is None or bucket < oldest:
            self.store.put(self._from_key, bucket)

    def unschedule(self, customer_id: str, due_ms: int) -> None:
        """Remove a customer's entry (erasure: no trace left behind)."""
        key = self._key(due_ms // self.bucket_ms)
        entries = [e for e in self.store.get(key) or [] if e[1] != customer_id]
        if entries:
            self.store.put(key, entries)
        else:
            self.store.delete(key)

    def floor_ms(self) -> int | None:
        """A time no entry is due before, or ``None`` when the index is empty:
        read from the store once (the earliest entry of the oldest bucket that
        may hold any, else that bucket's start), then kept as entries come
        and go, so the engine asks before every event for free.

        >>> index = DeadlineIndex(DictStore(), partition=0, bucket_ms=100)
        >>> index.schedule("c1", 250); index.schedule("c2", 420)
        >>> index.floor_ms(), index.pop_due(300), index.floor_ms()
        (250, [(250, 'c1')], 420)
        """
        if not self._floor_read:
            self._floor = self._read_floor()
            self._floor_read = True
        return self._floor

    def _read_floor(self) -> int | None:
        oldest = self.store.get(self._from_key)
        if oldest is None:
            return None
        entries = self.store.get(self._key(int(oldest)))
        return min(e[0] for e in entries) if entries else int(oldest) * self.bucket_ms

    def may_have_due(self, watermark_ms: int) -> bool:
        """Whether :meth:`pop_due` could find anything (one read: the oldest bucket)."""
        oldest = self.store.get(self._from_key)
        return oldest is not None and int(oldest) <= watermark_ms // self.bucket_ms

    def pop_due(self, watermark_ms: int) -> list[tuple[int, str]]:
        """Remove and return every ``(due_ms, customer_id)`` with ``due_ms <= watermark_ms``."""
        oldest = self.store.get(self._from_key)
        if oldest is None:
            return []
        last = watermark_ms // self.bucket_ms
        due: list[tuple[int, str]] = []
        for bucket in range(int(oldest), last + 1):
            key = self._key(bucket)
            entries = self.store.get(key)
            if not entries:
                continue
            ready = [(int(d), str(c)) for d, c in entries if d <= watermark_ms]
            if not ready:
                # Unchanged: no write (in the worker, no changelog record for it).
                continue
            rest = [e for e in entries if e[0] > watermark_ms]
            due.extend(ready)
            if rest:
                self.store.put(key, rest)
            else:
                self.store.delete(key)
        if last >= int(oldest):
            remaining = last if self.store.get(self._key(last)) else last + 1
            if remaining != oldest:
                self.store.put(self._from_key, remaining)
        self._floor = self._read_floor()
        self._floor_read = True
        return sorted(due)
