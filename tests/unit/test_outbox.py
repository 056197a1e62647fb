"""The outbox's own logic: batching, partitions, delivery callbacks, failures.

The producer here is a stand-in for aiokafka's accumulator that records the
batches handed to it; the integration tests run the outbox against the real
broker (every changelog write and output of a worker goes through it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka.errors import ProducerClosed
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata

from streams.outbox import (
    BATCH_BYTES,
    MAX_RECORD_BYTES,
    Outbox,
    RecordTooLargeError,
    UndeliveredError,
)


class Batch:
    def __init__(self, builder: Any, tp: Any) -> None:
        self.builder, self.tp = builder, tp
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def records(self) -> list[tuple[bytes | None, bytes | None]]:
        batch = DefaultRecordBatch(self.builder._build())
        return [(record.key, record.value) for record in batch]

    def acknowledge(self, base_offset: int) -> None:
        self.future.set_result(
            RecordMetadata(self.tp.topic, self.tp.partition, self.tp, base_offset, -1, 0, 0)
        )


class Accumulator:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._closed = False
        self._exception: BaseException | None = None

    def _append_batch(self, builder: Any, tp: Any) -> Batch:
        batch = Batch(builder, tp)
        self.batches.append(batch)
        return batch


class Producer:
    def __init__(self, partitions: int = 4) -> None:
        self._message_accumulator = Accumulator()
        self.partitions = partitions

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Runs an async test in its own event loop (the batches' futures need one)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(test())

    return wrapper


def make_outbox() -> tuple[Outbox, Producer, list[BaseException]]:
    producer = Producer()
    failures: list[BaseException] = []
    return Outbox(lambda: producer, exit_on_failure=failures.append), producer, failures


@run
async def test_records_stay_in_order_per_partition_and_leave_only_when_handed_off() -> None:
    outbox, producer, _ = make_outbox()
    for i in range(5):
        outbox.append("t", i % 2, f"k{i}".encode(), f"v{i}".encode())
    assert producer._message_accumulator.batches == [] and outbox.pending == 5
    assert outbox.hand_off() == 5 and outbox.pending == 0
    batches = {b.tp.partition: b.records() for b in producer._message_accumulator.batches}
    assert batches == {
        0: [(b"k0", b"v0"), (b"k2", b"v2"), (b"k4", b"v4")],
        1: [(b"k1", b"v1"), (b"k3", b"v3")],
    }
    assert outbox.hand_off() == 0  # nothing new: no empty batches


@run
async def test_a_full_batch_is_handed_off_and_a_tombstone_is_a_record_without_value() -> None:
    outbox, producer, _ = make_outbox()
    value = b"x" * 4000
    count = BATCH_BYTES // 4000 + 10
    for i in range(count):
        outbox.append("t", 0, str(i).encode(), value)
    outbox.append("t", 0, b"gone", None)
    outbox.hand_off()
    batches = producer._message_accumulator.batches
    assert len(batches) == 2
    records = [r for b in batches for r in b.records()]
    assert [k for k, _ in records] == [str(i).encode() for i in range(count)] + [b"gone"]
    assert records[-1] == (b"gone", None)


@run
async def test_a_record_larger_than_a_batch_goes_alone_one_over_the_limit_is_refused() -> None:
    outbox, producer, _ = make_outbox()
    outbox.append("t", 0, b"small", b"x")
    outbox.append("t", 0, b"large", b"x" * (BATCH_BYTES + 1))
    with pytest.raises(RecordTooLargeError, match=r"over the 1000000-byte limit .*; input: in/0@7"):
        outbox.append("t", 0, b"huge", b"x" * MAX_RECORD_BYTES, origin="in/0@7")
    outbox.hand_off()
    batches = producer._message_accumulator.batches
    assert [[k for k, _ in b.records()] for b in batches] == [[b"small"], [b"large"]]


@run
async def test_delivery_reports_the_offset_of_the_last_record_of_each_batch_once() -> None:
    outbox, producer, failures = make_outbox()
    offsets: list[int] = []
    for i in range(3):
        outbox.append("changelog", 2, str(i).encode(), b"v", offsets.append)
    outbox.hand_off()
    outbox.append("changelog", 2, b"3", b"v", offsets.append)
    outbox.hand_off()
    first, second = producer._message_accumulator.batches
    first.acknowledge(base_offset=100)
    second.acknowledge(base_offset=103)
    await asyncio.sleep(0)
    assert offsets == [102, 103] and failures == []


@run
async def test_an_undelivered_batch_calls_the_failure_hook_naming_the_inputs_behind_it() -> None:
    outbox, producer, failures = make_outbox()
    outbox.append("t", 0, b"k", b"v")
    for offset in range(7):
        outbox.append("t", 1, b"secret-key", b"secret-value", origin=f"in/3@{offset}")
    outbox.hand_off()
    error = RuntimeError("broker gone")
    first, second = producer._message_accumulator.batches
    first.future.set_exception(error)
    second.future.set_exception(error)
    await asyncio.sleep(0)
    assert [f.__cause__ for f in failures] == [error, error]
    assert all(isinstance(f, UndeliveredError) for f in failures)
    assert str(failures[0]) == "batch of 1 records to t partition 0 was refused: " + repr(error)
    named = str(failures[1])
    assert "in/3@0, in/3@1, in/3@2, in/3@3, in/3@4 and 2 more" in named
    assert "secret" not in named


@run
async def test_keyed_records_go_where_kafkas_default_partitioner_puts_them() -> None:
    outbox, producer, _ = make_outbox()
    await outbox.learn_partitions("changes")
    keys = [f"c{i:07d}".encode() for i in range(50)]
    for key in keys:
        outbox.append_keyed("changes", key, b"v")
    outbox.hand_off()
    placed = {
        key: batch.tp.partition
        for batch in producer._message_accumulator.batches
        for key, _ in batch.records()
    }
    assert placed == {key: (murmur2(key) & 0x7FFFFFFF) % 4 for key in keys}


@run
async def test_hand_off_to_a_closed_producer_raises_so_the_commit_fails() -> None:
    outbox, producer, _ = make_outbox()
    producer._message_accumulator._closed = True
    outbox.append("t", 0, b"k", b"v")
    with pytest.raises(ProducerClosed):
        outbox.hand_off()
