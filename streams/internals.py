"""Every private Faust and aiokafka attribute the worker uses, each behind one function.

segstream goes under Faust's public API in a few places, each for a measured
reason given below. Those names carry no compatibility promise, so they are
used here and nowhere else in ``streams/``, and ``tests/unit/test_internals.py``
checks each one against the installed packages: an upgrade that renames,
removes or changes one fails that test by name, not a worker in production.

Read in faust-streaming 0.15.3 and aiokafka 0.14.0 (mode-streaming 0.7.1,
rocksdict 0.3.29), the versions pinned in ``pyproject.toml``.

=======================================  =====================================================
Function                                 Private name it reaches
=======================================  =====================================================
:func:`partition_of`                     ``faust.streams._current_event``
:func:`aiokafka_producer`                Faust ``Producer._ensure_producer()``
:func:`append_batch`                     aiokafka ``AIOKafkaProducer._message_accumulator``,
                                         ``MessageAccumulator._append_batch``, ``_closed``,
                                         ``_exception``
:func:`committed_offset`                 Faust ``Consumer._committed_offset``
:func:`key_encoder`                      Faust ``Store._encode_key``
:func:`value_encoder`                    Faust ``Store._encode_value`` (and, for a JSON table,
                                         the codec it goes through)
:func:`rocksdb_partition`                Faust RocksDB ``Store._db_for_partition``
:func:`open_rocksdb_partitions`          Faust RocksDB ``Store._dbs``
:func:`reopen_rocksdb_partition`         Faust RocksDB ``Store._dbs``, ``_open_for_partition``
:func:`stream_label`                     Faust ``PrometheusMonitor._stream_label``
:func:`deliver_in_line`                  Faust ``Consumer._drain_messages``'s call of
                                         ``wait_first`` per message
=======================================  =====================================================

Hot paths bind what they need once: the outbox calls :func:`append_batch` per
record *batch*, and the table writer takes :func:`key_encoder` and
:func:`value_encoder` once per partition write, not per record.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from contextlib import contextmanager
from types import MethodType
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
from aiokafka.structs import TopicPartition
from faust.sensors.prometheus import PrometheusMonitor
from faust.stores.base import Store as FaustStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer as FaustAIOKafkaProducer
from faust.types import TP, AppT, ConsumerT, StoreT, StreamT
from mode.services import WaitResults
from rocksdict import Rdict


@contextmanager
def partition_of(event: Any) -> Iterator[None]:
    """Point Faust's current-event context variable at ``event`` for a while.

    Faust's tables read and write the partition of the *current event*; in a
    batch that must be an event of the key's own partition. Only the context
    variable is set: a stream's ``current_event`` attribute belongs to the
    take buffer filling it in the background. Faust exposes a reader
    (``faust.current_event()``) but no setter outside its stream loop.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def aiokafka_producer(app: AppT) -> AIOKafkaProducer:
    """The started aiokafka producer inside Faust's producer.

    The outbox appends whole record batches to it, so that Faust's flush
    before every offset commit covers them too (:mod:`streams.outbox`).
    Raises Faust's ``NotReady`` before the producer has started.
    """
    return cast(FaustAIOKafkaProducer, app.producer)._ensure_producer()


def append_batch(
    producer: AIOKafkaProducer, builder: BatchBuilder, tp: TopicPartition
) -> MessageBatch:
    """Queue a filled ``BatchBuilder`` for ``tp`` without awaiting room for it.

    This is ``AIOKafkaProducer.send_batch`` minus its wait: the table
    write-back runs in Faust's synchronous ``on_commit_initiated`` hook,
    which cannot await. The checks are the ones ``MessageAccumulator``
    makes before its own appends. Returns the batch; its ``future`` resolves
    to the first record's metadata when the broker acknowledges it.
    """
    accumulator = producer._message_accumulator
    if accumulator._closed:
        raise ProducerClosed()
    if accumulator._exception is not None:
        raise accumulator._exception
    return accumulator._append_batch(builder, tp)


def committed_offset(consumer: ConsumerT, tp: TP) -> int | None:
    """The offset Faust last committed (or read as committed at assignment) for ``tp``.

    Asking the consumer thread (``position``) while a batch holds the
    processing lock deadlocks a rebalance (:mod:`streams.watermarks`);
    Faust's own record of the committed offset is read synchronously.
    """
    offsets = cast(Consumer, consumer)._committed_offset
    return offsets.get(tp)  # a defaultdict: .get does not add the key


def key_encoder(store: StoreT[Any, Any]) -> Callable[[Any], bytes]:
    """The store's key serializer: a key's bytes in its changelog and in RocksDB."""
    return cast(FaustStore[Any, Any], store)._encode_key


def value_encoder(store: StoreT[Any, Any]) -> Callable[[Any], bytes | None]:
    """The store's value serializer: a value's bytes in its changelog and in RocksDB.

    For a table of plain JSON (no model type, Faust's ``json`` codec, the
    app's default), a dict or list is encoded by orjson directly, to the
    same bytes: Faust's codec is orjson too, behind a registry and a codec
    chain, with non-string keys allowed. Directly, a simulated customer's
    profile took 17% less time to encode with 20 traits, 30% less without
    (best of five passes over 300 profiles). Anything orjson refuses that
    way (a non-string key, a type it does not know) is left to Faust's
    encoder.
    """
    faust_encode = cast(FaustStore[Any, Any], store)._encode_value
    serializers = store.app.serializers
    codec = store.value_serializer or serializers.value_serializer
    if store.value_type is not None or codec != "json":
        return faust_encode

    def encode(value: Any) -> bytes | None:
        if type(value) is dict or type(value) is list:
            try:
                return orjson.dumps(value, option=orjson.OPT_UTC_Z)
            except TypeError:
                pass
        return faust_encode(value)

    return encode


def rocksdb_partition(store: StoreT[Any, Any], partition: int) -> Rdict | None:
    """A RocksDB store's database of ``partition``, opened if needed; ``None`` for memory.

    The table writer puts encoded entries into it directly, as Faust's own
    ``_set`` does, but without Faust's current-event lookup per key.
    """
    if not isinstance(store, RocksDBStore):
        return None
    db: Rdict = store._db_for_partition(partition)
    return db


def open_rocksdb_partitions(store: StoreT[Any, Any]) -> MutableMapping[int, Rdict] | None:
    """A RocksDB store's open databases by partition; ``None`` for a memory store.

    A partition missing here was revoked (Faust closes and drops it).
    """
    if not isinstance(store, RocksDBStore):
        return None
    return store._dbs


def reopen_rocksdb_partition(store: StoreT[Any, Any], partition: int) -> None:
    """Close a partition's RocksDB database and open it again in its place.

    Reopening writes a fresh MANIFEST, the last file that still names erased
    keys after a compaction (:mod:`streams.erasure`).
    """
    rocks = cast(RocksDBStore, store)
    rocks._dbs[partition].close()
    rocks._dbs[partition] = rocks._open_for_partition(partition)


def stream_label(monitor: PrometheusMonitor, stream: StreamT[Any]) -> str:
    """The ``stream`` label Faust's Prometheus sensor gives a stream's events."""
    return monitor._stream_label(stream)


def deliver_in_line(consumer: ConsumerT) -> None:
    """Hand each fetched message to Faust's delivery callback in line, not in a task.

    Faust's fetch loop (``Consumer._drain_messages``) delivers every message
    with ``wait_first(callback(message), suspend_flow.wait())``: four tasks
    per message (the callback, the flow event, and the consumer's stopped
    and crashed events), an ``asyncio.wait`` and three cancellations, so
    that a delivery blocked on a full stream buffer, the producer buffer or
    stopped flow is abandoned when a rebalance suspends the flow. That
    machinery took 10 to 13% of a worker's CPU in the ab bench (py-spy),
    though a delivery almost never blocks: it decodes the message and puts
    it in a stream buffer with room.

    After this, that call first runs the delivery by hand, in the fetch
    loop's own task, while the flow is not suspended and the consumer is
    neither stopping nor crashed. A delivery that finishes without waiting
    (the common case) is done: nothing else is created. One that has to
    wait goes on in a task, raced against the flow event exactly as Faust
    races it (:func:`_run_rest`), so a rebalance still abandons it. Every
    other ``wait_first`` of the consumer is Faust's own. Idempotent.
    """
    service = cast(Consumer, consumer)
    if getattr(service, "_delivers_in_line", False):
        return
    faust_wait_first = service.wait_first
    suspend_flow = service.suspend_flow

    async def wait_first(self: Consumer, *coros: Any, timeout: Any = None) -> WaitResults:
        if (
            len(coros) == 2
            and timeout is None
            and _waits_on(coros[1], suspend_flow)
            and not suspend_flow.is_set()
            and not self.should_stop
            and not self.crashed
        ):
            delivery, flow = coros
            try:
                waiting_on = delivery.send(None)
            except StopIteration as finished:
                flow.close()  # never started
                return WaitResults([delivery], [finished.value], False)
            except BaseException:
                flow.close()
                raise
            return await faust_wait_first(_run_rest(delivery, waiting_on), flow)
        return await faust_wait_first(*coros, timeout=timeout)

    service.wait_first = MethodType(wait_first, service)  # type: ignore[method-assign]
    service._delivers_in_line = True  # type: ignore[attr-defined]


def _waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Whether ``coro`` is an unstarted ``event.wait()``."""
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and coro.cr_code is asyncio.Event.wait.__code__
        and frame.f_locals.get("self") is event
    )


async def _run_rest(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Run on a coroutine that was started by hand and is waiting on
    ``waiting_on`` (what it yielded: a future, or ``None`` for a bare yield),
    as the task running it would: resumed once that future is done, and
    cancelled where this one is."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False
                try:
                    await waiting_on
                except Exception:  # noqa: S110 - the coroutine reads it from its future
                    pass  # (a cancellation is a BaseException: it goes on below)
        except asyncio.CancelledError as cancelled:
            # (A task cancelled while waiting cancels the future too.)
            try:
                waiting_on = coro.throw(cancelled)
            except StopIteration as finished:
                return finished.value
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as finished:
            return finished.value
