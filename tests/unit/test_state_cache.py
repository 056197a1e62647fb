"""The write-back cache keeps a batch's state together until the commit, and a
commit's writes together across tables."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.state_cache import (
    FlushMarker,
    WriteBackCache,
    flush_all,
    recover_interrupted_flush,
)


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


class Recorder:
    """Prepared writes that log when they are stored and sent, and store into
    ``table`` if given; the store of partition ``fail_on`` fails."""

    def __init__(
        self,
        marker: FlushMarker | None = None,
        fail_on: int | None = None,
        table: FakeTable | None = None,
    ) -> None:
        self.marker = marker
        self.fail_on = fail_on
        self.table = table
        self.log: list[tuple[str, int, bool]] = []  # (step, partition, marker present)

    def prepare(self, partition: int, items: list[tuple[str, Any]]) -> Any:
        recorder = self

        class Prepared:
            count = len(items)

            def __init__(self) -> None:
                self.partition = partition

            def store(self) -> None:
                recorder.note("store", partition)
                if partition == recorder.fail_on:
                    raise OSError("disk full")
                for key, value in items if recorder.table is not None else ():
                    if value is None:
                        del recorder.table[key]
                    else:
                        recorder.table[key] = value

            def send(self) -> None:
                recorder.note("send", partition)

        return Prepared()

    def note(self, step: str, partition: int) -> None:
        marked = self.marker is not None and self.marker.path.exists()
        self.log.append((step, partition, marked))


def caches_over(writer: Recorder, partitions: tuple[int, ...]) -> list[WriteBackCache]:
    """Two caches (two tables) with a dirty entry in each of ``partitions``."""
    caches = [WriteBackCache(FakeTable(), max_clean=10, writer=writer) for _ in range(2)]
    for cache in caches:
        for partition in partitions:
            cache.put(f"c{partition}", {"n": partition}, FakeEvent(partition))
    return caches


def test_every_table_is_stored_under_the_marker_before_any_changelog_record_is_sent(
    tmp_path: Path,
) -> None:
    marker = FlushMarker(tmp_path / "flush-in-progress")
    writer = Recorder(marker)
    assert flush_all(caches_over(writer, (0, 3)), marker=marker) == 4
    steps = [step for step, _, _ in writer.log]
    assert steps == ["store"] * 4 + ["send"] * 4
    # The marker is there while the stores are written, gone before the sends.
    assert all(present for step, _, present in writer.log if step == "store")
    assert not any(present for step, _, present in writer.log if step == "send")
    assert not marker.path.exists() and marker.interrupted() is None
    # Nothing dirty: nothing stored, no marker written.
    writer.log.clear()
    assert flush_all(caches_over(writer, ()), marker=marker) == 0
    assert writer.log == [] and not marker.path.exists()


def test_a_write_that_fails_leaves_its_partitions_named_until_the_next_start(
    tmp_path: Path,
) -> None:
    marker = FlushMarker(tmp_path / "flush-in-progress")
    writer = Recorder(marker, fail_on=3)
    with pytest.raises(OSError, match="disk full"):
        flush_all(caches_over(writer, (0, 3)), marker=marker)
    assert not any(step == "send" for step, _, _ in writer.log)  # nothing reached the changelog
    assert marker.interrupted() == [0, 3]
    # A later write that succeeds does not clear what the failed one left.
    writer.fail_on = None
    flush_all(caches_over(writer, (1,)), marker=marker)
    assert marker.interrupted() == [0, 3]


def test_entries_a_failed_write_did_not_store_are_written_by_the_next_flush(
    tmp_path: Path,
) -> None:
    table = FakeTable(gone={"n": 1})
    writer = Recorder(fail_on=2, table=table)
    cache = WriteBackCache(table, max_clean=10, writer=writer)
    anchor = FakeEvent(2)
    cache.put("c1", {"n": 1}, anchor)
    cache.delete_on_commit("gone", anchor)
    with pytest.raises(OSError, match="disk full"):
        flush_all([cache])
    # Nothing was lost: both still wait, the removed key still reads as gone.
    assert cache.dirty_count == 2 and table.writes == []
    assert cache.get("gone", anchor) is None
    writer.fail_on = None
    assert flush_all([cache]) == 2
    assert cache.dirty_count == 0
    assert table == {"c1": {"n": 1}} and cache.peek("c1") == {"n": 1}


def test_an_interrupted_write_removes_exactly_its_partitions_local_tables(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    names = ["profiles-1.db", "population-1.db", "profiles-11.db", "held-2.db", "held-backups"]
    for name in names:
        (tables / name).mkdir(parents=True)
        (tables / name / "000001.log").write_bytes(b"x")
    marker = FlushMarker(tmp_path / "flush-in-progress")
    assert recover_interrupted_flush(marker, tables) == []  # no marker: nothing removed
    assert sorted(p.name for p in tables.iterdir()) == sorted(names)
    marker.path.write_text("1 2\n")
    assert recover_interrupted_flush(marker, tables) == [1, 2]
    assert sorted(p.name for p in tables.iterdir()) == ["held-backups", "profiles-11.db"]
    assert not marker.path.exists()
