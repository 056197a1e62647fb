"""The write-back cache keeps a batch's state together until the commit."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.state_cache import WriteBackCache


class FakeTable(dict[str, Any]):
    """The part of a Faust table the cache uses; every write is logged."""

    def __init__(self, **values: Any) -> None:
        super().__init__(values)
        self.writes: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append((key, None))
        super().__delitem__(key)


class FakeEvent:
    """A Faust event as far as the cache looks: its message's partition."""

    def __init__(self, partition: int = 0) -> None:
        self.message = SimpleNamespace(partition=partition)


def test_delete_on_commit_waits_for_the_commit_like_the_writes_beside_it() -> None:
    table = FakeTable(bucket=[[5, "c1"]])
    cache = WriteBackCache(table, max_clean=10)
    anchor = FakeEvent()
    assert cache.get("bucket", anchor) == [[5, "c1"]]
    cache.delete_on_commit("bucket", anchor)
    cache.put("c1", {"deadline_ms": None}, anchor)
    # Nothing reaches the table before the commit: a crash now loses both.
    assert table.writes == []
    assert cache.get("bucket", anchor) is None and cache.peek("bucket") is None
    assert cache.flush() == 2
    assert "bucket" not in table and table["c1"] == {"deadline_ms": None}
    assert cache.get("bucket", anchor) is None
    # Deleting a key the table never had writes nothing.
    cache.delete_on_commit("never", anchor)
    cache.flush()
    assert ("never", None) not in table.writes
