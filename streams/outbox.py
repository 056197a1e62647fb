"""Records appended straight to aiokafka's record batches: one future per batch.

Faust sends every record — a table's changelog write as much as an agent's
output — through its own per-message path: a ``FutureMessage``, a producer
buffer, a task, a future and a callback per record. A sparse customer base
sends several records per event (the profile's changelog write, segment
changes, the weekly training examples), and that path cost more CPU than
everything segstream computes (README, "Worker throughput"). The outbox
appends records to aiokafka ``BatchBuilder`` objects instead — a C call per
record — and hands each builder to the producer's accumulator as one batch.

Delivery is at-least-once, as with Faust's own sends: the batches sit in the
same aiokafka producer as Faust's records, and Faust flushes that producer
before it commits offsets, so no offset is committed before the records of
the events behind it are acknowledged. A batch the broker never
acknowledges (after the producer's own retries) stops the worker at once,
without a commit, so those events are consumed again on restart — state must
never run ahead of what reached Kafka. The same stop serves a record that can
never be sent (larger than any batch may be): the log names the input
records behind it (topic, partition, offset; never a key or a value), so an
operator can fix the topic's limit or the record.

Handing a builder over is synchronous (:func:`streams.internals.append_batch`,
the step of ``AIOKafkaProducer.send_batch`` after its wait for room) because
the table write-back runs in Faust's synchronous ``on_commit_initiated``
hook; aiokafka is pinned in ``pyproject.toml`` for that reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition

from schemas.errors import SegstreamError
from streams import metrics
from streams.internals import append_batch

log = logging.getLogger(__name__)

# Room for ~60 profiles per batch, well under the broker's 1 MiB default
# message.max.bytes and the producer's max_request_size.
BATCH_BYTES = 256 * 1024
# A record larger than this is refused here rather than by the broker.
MAX_RECORD_BYTES = 1_000_000

# Record batches uncompressed (aiokafka's codec number 0), like the records
# Faust sends with its default settings.
NO_COMPRESSION = 0

OnDelivered = Callable[[int], None]  # called with the offset of a batch's last record
# Input positions named in a failure log per batch; the rest are counted.
MAX_ORIGINS = 5


class UndeliveredError(SegstreamError):
    """A record or a batch of records that did not reach Kafka; the worker stops on it."""


class RecordTooLargeError(UndeliveredError, ValueError):
    """A record over :data:`MAX_RECORD_BYTES`: no batch can ever carry it."""


class Outbox:
    """Records of a worker waiting to be handed to the producer, per topic partition.

    Parameters
    ----------
    producer
        Returns the started ``AIOKafkaProducer`` (Faust's, so that Faust's
        flush before a commit covers these records too).
    exit_on_failure
        What to do when a batch is not delivered; the default ends the
        process at once (see the module docstring).
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        exit_on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._producer = producer
        self._open: dict[TopicPartition, BatchBuilder] = {}
        self._on_delivered: dict[TopicPartition, list[OnDelivered]] = {}
        self._origins: dict[TopicPartition, list[str]] = {}
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        self._fail = exit_on_failure or _exit_without_commit

    @property
    def pending(self) -> int:
        """Records appended and not yet handed to the producer."""
        return sum(builder.record_count() for builder in self._open.values())

    async def learn_partitions(self, topic: str) -> None:
        """Look up ``topic``'s partitions once, for :meth:`append_keyed`."""
        if topic not in self._partitions:
            partitions = await self._producer().partitions_for(topic)
            self._partitions[topic] = sorted(partitions)

    def append_keyed(
        self, topic: str, key: bytes | None, value: bytes, origin: str | None = None
    ) -> None:
        """Append a record to the partition Kafka's default partitioner picks for ``key``.

        :meth:`learn_partitions` must have been awaited for ``topic``.
        """
        partitions = self._partitions[topic]
        partition = self._partitioner(key, partitions, partitions)
        self.append(topic, partition, key, value, origin=origin)

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_delivered: OnDelivered | None = None,
        origin: str | None = None,
    ) -> None:
        """Append one record (``value`` ``None``: a tombstone).

        ``on_delivered`` is called once with the offset of the last record of
        the batch this record ends up in, when the broker acknowledges it.
        ``origin`` names the input record behind it (``topic/partition@offset``)
        for the log if its batch is not delivered.
        """
        size = len(key or b"") + len(value or b"")
        if size > MAX_RECORD_BYTES:
            raise RecordTooLargeError(
                f"record of {size} bytes for {topic} is over the {MAX_RECORD_BYTES}-byte limit "
                f"(the broker's default message.max.bytes); input: {origin or 'unknown'}"
            )
        tp = TopicPartition(topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._new_builder()
        if builder.append(timestamp=None, key=key, value=value) is None:
            self._hand_off(tp)
            builder = self._open[tp] = self._new_builder()
            # An empty batch takes any record, however large.
            builder.append(timestamp=None, key=key, value=value)
        if origin is not None:
            self._origins.setdefault(tp, []).append(origin)
        if on_delivered is not None:
            callbacks = self._on_delivered.setdefault(tp, [])
            if on_delivered not in callbacks:
                callbacks.append(on_delivered)

    def hand_off(self) -> int:
        """Hand every open batch to the producer; returns the records handed over."""
        handed = 0
        for tp in list(self._open):
            handed += self._hand_off(tp)
        return handed

    def discard(self) -> None:
        """Drop what was not handed over (the producer is gone)."""
        self._open.clear()
        self._on_delivered.clear()
        self._origins.clear()

    def stop(self, error: BaseException) -> None:
        """Stop as for an undelivered batch: nothing read since the last commit is committed."""
        self._fail(error)

    def _new_builder(self) -> BatchBuilder:
        return BatchBuilder(BATCH_BYTES, NO_COMPRESSION, is_transactional=False)

    def _hand_off(self, tp: TopicPartition) -> int:
        builder = self._open.pop(tp)
        callbacks = self._on_delivered.pop(tp, [])
        origins = self._origins.pop(tp, [])
        count: int = builder.record_count()
        if count == 0:
            return 0
        batch = append_batch(self._producer(), builder, tp)
        batch.future.add_done_callback(
            lambda future: self._delivered(future, tp, count, callbacks, origins)
        )
        metrics.child(metrics.outbox_records, tp.topic).inc(count)
        metrics.outbox_batches.inc()
        return count

    def _delivered(
        self,
        future: Any,
        tp: TopicPartition,
        count: int,
        callbacks: list[OnDelivered],
        origins: list[str],
    ) -> None:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            named = ", ".join(origins[:MAX_ORIGINS])
            if len(origins) > MAX_ORIGINS:
                named += f" and {len(origins) - MAX_ORIGINS} more"
            failure = UndeliveredError(
                f"batch of {count} records to {tp.topic} partition {tp.partition} was "
                f"{'cancelled' if error is None else f'refused: {error!r}'}"
                + (f"; input: {named}" if named else "")
            )
            failure.__cause__ = error
            self._fail(failure)
            return
        last_offset = future.result().offset + count - 1
        for callback in callbacks:
            callback(last_offset)


def _exit_without_commit(error: BaseException) -> None:
    log.critical(
        "a batch of records was not delivered (%s): stopping now, without committing "
        "offsets, so the events behind it are consumed again",
        error,
    )
    logging.shutdown()
    os._exit(70)
