"""Each private Faust and aiokafka name in :mod:`streams.internals`, checked against the packages.

One test per wrapped call: the private attribute must exist with the
signature it was read with (faust-streaming 0.15.3, aiokafka 0.14.0), and
where it is cheap the wrapper runs for real against a Faust app with a memory
or RocksDB store, or an unstarted aiokafka producer — no broker needed. A
failure here means an upgrade changed something the worker depends on; the
message names it. A last test keeps every other module of ``streams/`` from
reaching private names itself.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder, MessageAccumulator
from aiokafka.structs import TopicPartition
from faust.exceptions import NotReady
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.stores.base import Store as FaustStore
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer as FaustAIOKafkaProducer
from faust.types import TP
from prometheus_client import CollectorRegistry

from models.profile import ProfileConfig, apply_event
from streams import internals

ROOT = Path(__file__).resolve().parents[2]
MISSING = object()
UPGRADE = "changed in the installed version: streams/internals.py must be re-read against it"


def parameters(function: Callable[..., Any]) -> list[str]:
    """A function's parameter names, ``self`` included."""
    return list(inspect.signature(function).parameters)


def require(owner: Any, name: str, expected: list[str] | None = None) -> Any:
    """``owner.name``, which must exist (and take ``expected`` parameters), or a clear failure."""
    found = getattr(owner, name, MISSING)
    assert found is not MISSING, f"{owner!r} has no {name}: {UPGRADE}"
    if expected is not None:
        got = parameters(found)
        assert got == expected, f"{owner!r}.{name} takes {got}, not {expected}: {UPGRADE}"
    return found


class FakeEvent:
    """A Faust event as far as tables look: its message's partition (weakly referenced)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def make_app(tmp_path: Path, store: str) -> faust.App:
    # Never started: tables, stores, producer and consumer objects are built
    # lazily without a broker.
    return faust.App(
        f"internals-{store}",
        broker="kafka://127.0.0.1:1",
        store=f"{store}://",
        datadir=str(tmp_path),
        env={},
    )


@pytest.fixture
def memory_app(tmp_path: Path) -> Iterator[faust.App]:
    yield make_app(tmp_path, "memory")


@pytest.fixture
def rocksdb_app(tmp_path: Path) -> Iterator[faust.App]:
    yield make_app(tmp_path, "rocksdb")


def test_partition_of_sets_the_event_faust_tables_read_their_partition_from() -> None:
    variable = require(faust.streams, "_current_event")
    assert isinstance(variable, contextvars.ContextVar), f"_current_event: {UPGRADE}"
    event = FakeEvent(3)
    assert faust.current_event() is None
    with internals.partition_of(event):
        # faust.current_event() is what Faust's tables and stores consult.
        assert faust.current_event() is event, f"faust.current_event(): {UPGRADE}"
    assert faust.current_event() is None


def test_aiokafka_producer_is_reached_through_faust_s_producer(memory_app: faust.App) -> None:
    require(FaustAIOKafkaProducer, "_ensure_producer", ["self"])
    assert isinstance(memory_app.producer, FaustAIOKafkaProducer)
    # Not started: Faust's own refusal proves the call reached _ensure_producer.
    with pytest.raises(NotReady):
        internals.aiokafka_producer(memory_app)


def test_append_batch_queues_a_builder_and_refuses_a_failed_or_closed_accumulator() -> None:
    require(MessageAccumulator, "_append_batch", ["self", "builder", "tp"])

    async def exercise() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started
        accumulator = require(producer, "_message_accumulator")
        assert isinstance(accumulator, MessageAccumulator), f"_message_accumulator: {UPGRADE}"
        assert require(accumulator, "_closed") is False
        assert require(accumulator, "_exception") is None
        tp = TopicPartition("t", 1)
        builder = BatchBuilder(1024, 0, is_transactional=False)
        builder.append(timestamp=None, key=b"k", value=b"v")
        batch = internals.append_batch(producer, builder, tp)
        assert batch.tp == tp and batch.record_count == 1 and not batch.future.done()
        # What the producer's own sends raise, ours raise too.
        refused = RuntimeError("broker gone")
        accumulator.fail_all(refused)
        assert batch.future.exception() is refused
        with pytest.raises(RuntimeError, match="broker gone"):
            internals.append_batch(producer, BatchBuilder(1024, 0, is_transactional=False), tp)
        accumulator._exception = None
        await accumulator.close()
        with pytest.raises(ProducerClosed):
            internals.append_batch(producer, BatchBuilder(1024, 0, is_transactional=False), tp)

    asyncio.run(exercise())


def test_committed_offset_reads_faust_s_record_without_adding_to_it(
    memory_app: faust.App,
) -> None:
    assert "_committed_offset" in Consumer.__annotations__, f"Consumer._committed_offset: {UPGRADE}"
    consumer = memory_app.consumer
    tp = TP("segstream.clickstream", 2)
    assert internals.committed_offset(consumer, tp) is None
    offsets = require(consumer, "_committed_offset")
    assert tp not in offsets  # a defaultdict: the read must not create the entry
    offsets[tp] = 41  # as Faust records a commit
    assert internals.committed_offset(consumer, tp) == 41


def test_key_and_value_encoders_give_the_bytes_faust_writes_and_reads(
    memory_app: faust.App,
) -> None:
    require(FaustStore, "_encode_key", ["self", "key"])
    require(FaustStore, "_encode_value", ["self", "value"])
    table = memory_app.Table("profiles", key_type=str, partitions=2, default=None)
    store = table.data
    key_bytes = internals.key_encoder(store)("c1")
    value_bytes = internals.value_encoder(store)({"orders": 2})
    assert isinstance(key_bytes, bytes) and isinstance(value_bytes, bytes)
    # Faust's changelog recovery decodes them back with the table's serializers.
    assert store._decode_key(key_bytes) == "c1"
    assert store._decode_value(value_bytes) == {"orders": 2}


def test_a_json_table_s_values_are_encoded_to_exactly_faust_s_bytes(
    memory_app: faust.App,
) -> None:
    # The encoder skips Faust's registry and codec chain for plain JSON; the
    # bytes must stay Faust's (its changelog recovery and old stores read them).
    table = memory_app.Table("profiles", key_type=str, partitions=2, default=None)
    store = table.data
    encode = internals.value_encoder(store)
    order = {
        "topic": "purchases",
        "type": "order",
        "ts": 86_400_000,
        "event_id": "e1",
        "customer_id": "c1",
        "order_id": "o1",
        "amount": 12.5,
        "currency": "EUR",
    }
    profile, _ = apply_event(None, order, ProfileConfig())
    values: list[Any] = [
        profile,
        [[5, "c1"], [7, "c2"]],
        {"d": {"20000": [1, 2.5, 2.5, 2.5]}, "text": "é ✓", "none": None, "big": 2**62},
        {"when": datetime(2026, 1, 1, tzinfo=UTC)},  # Faust writes UTC as "Z"
        {1: "a non-string key"},  # orjson refuses it without Faust's option
        {"amount": Decimal("1.10")},  # a type orjson does not know: Faust's default
        b"raw bytes",  # Faust passes bytes through
        "a string",
    ]
    for value in values:
        assert encode(value) == store._encode_value(value), value
    assert encode is not store._encode_value  # the fast path is in use for this table


def test_rocksdb_partition_opens_the_database_faust_reads_from(rocksdb_app: faust.App) -> None:
    require(RocksDBStore, "_db_for_partition", ["self", "partition"])
    table = rocksdb_app.Table("profiles", key_type=str, partitions=2, default=None)
    store = table.data
    assert isinstance(store, RocksDBStore)
    db = internals.rocksdb_partition(store, 1)
    assert db is not None
    db.put(internals.key_encoder(store)("c1"), internals.value_encoder(store)({"orders": 2}))
    # Faust's own read of that partition finds the entry.
    with internals.partition_of(FakeEvent(1)):
        assert store["c1"] == {"orders": 2}
    assert Path(store.partition_path(1)).exists()


def test_rocksdb_helpers_are_none_for_a_memory_store(memory_app: faust.App) -> None:
    store = memory_app.Table("profiles", key_type=str, partitions=2, default=None).data
    assert internals.rocksdb_partition(store, 0) is None
    assert internals.open_rocksdb_partitions(store) is None


def test_open_rocksdb_partitions_lists_what_faust_has_open(rocksdb_app: faust.App) -> None:
    assert "_dbs" in RocksDBStore.__annotations__, f"RocksDB Store._dbs: {UPGRADE}"
    store = rocksdb_app.Table("held", key_type=str, partitions=4, default=None).data
    assert internals.open_rocksdb_partitions(store) == {}
    opened = internals.rocksdb_partition(store, 2)
    open_dbs = internals.open_rocksdb_partitions(store)
    assert open_dbs is not None and set(open_dbs) == {2} and open_dbs[2] is opened


def test_reopen_rocksdb_partition_replaces_the_database_and_keeps_its_data(
    rocksdb_app: faust.App,
) -> None:
    require(RocksDBStore, "_open_for_partition", ["self", "partition"])
    store = rocksdb_app.Table("deadlines", key_type=str, partitions=2, default=None).data
    before = internals.rocksdb_partition(store, 0)
    assert before is not None
    before.put(b"k", b"v")
    before.flush()
    internals.reopen_rocksdb_partition(store, 0)
    after = internals.rocksdb_partition(store, 0)
    assert after is not None and after is not before
    assert after.get(b"k") == b"v"


def test_stream_label_is_the_label_faust_s_sensor_gives_a_stream(memory_app: faust.App) -> None:
    require(PrometheusMonitor, "_stream_label", ["self", "stream"])
    monitor = PrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "t"))

    async def label() -> str:
        stream = memory_app.topic("segstream.clickstream").stream()
        return internals.stream_label(monitor, stream)

    assert asyncio.run(label()) == "topic_segstream.clickstream"


# Third-party objects whose private names a module may use outside internals.py
# (``os._exit`` is documented and public despite its name).
ALLOWED_PRIVATE = {("os", "_exit")}
THIRD_PARTY = ("faust", "aiokafka", "mode", "rocksdict")


def private_uses(path: Path) -> list[str]:
    """``x._name`` on anything but ``self``/``cls``, ``getattr(x, "_name")`` and
    ``from <faust|aiokafka|mode|rocksdict>… import _name`` in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner in ("self", "cls") or (owner, node.attr) in ALLOWED_PRIVATE:
                continue
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and str(name.value).startswith("_"):
                    if not str(name.value).startswith("__"):
                        found.append(f"{path.name}:{node.lineno} {node.func.id} {name.value}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(THIRD_PARTY):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
    return found


def test_no_other_module_of_streams_reaches_a_private_name() -> None:
    sources = sorted((ROOT / "streams").rglob("*.py"))
    assert len(sources) > 20, sources  # the walk found the package
    offenders = [
        use
        for path in sources
        if path.name != "internals.py" or path.parent.name != "streams"
        for use in private_uses(path)
    ]
    assert not offenders, f"put these behind streams/internals.py: {offenders}"
    # The scanner does see private names where they are.
    assert private_uses(ROOT / "streams" / "internals.py")


# -- deliver_in_line ---------------------------------------------------------------


def test_faust_s_fetch_loop_races_each_delivery_against_the_flow_event(
    memory_app: faust.App,
) -> None:
    # deliver_in_line speeds up exactly this call; another shape is not sped up.
    drain = require(Consumer, "_drain_messages", ["self", "fetcher"])
    source = inspect.getsource(drain)
    assert "self.wait_first(" in source, f"Consumer._drain_messages: {UPGRADE}"
    assert "callback(message), self.suspend_flow.wait()" in source, (
        f"Consumer._drain_messages: {UPGRADE}"
    )
    flow = require(memory_app.consumer, "suspend_flow")
    assert isinstance(flow, asyncio.Event), f"Consumer.suspend_flow: {UPGRADE}"


def delivery(trace: list[str], gate: asyncio.Event | None = None) -> Any:
    async def deliver() -> str:
        trace.append("in line" if asyncio.current_task() is TEST_TASK[0] else "in a task")
        try:
            if gate is not None:
                await gate.wait()
        except asyncio.CancelledError:
            trace.append("abandoned")
            raise
        trace.append("delivered")
        return "done"

    return deliver()


TEST_TASK: list[asyncio.Task[Any] | None] = [None]


def run_with_consumer(app: faust.App, body: Callable[[Consumer], Any]) -> Any:
    async def main() -> Any:
        TEST_TASK[0] = asyncio.current_task()
        # Built in the running loop, as a worker builds it (its events bind a loop).
        consumer = app.consumer
        internals.deliver_in_line(consumer)
        internals.deliver_in_line(consumer)  # idempotent
        return await body(consumer)

    return asyncio.run(main())


def test_a_delivery_that_need_not_wait_runs_in_the_fetch_loop_s_own_task(
    memory_app: faust.App,
) -> None:
    trace: list[str] = []

    async def body(consumer: Consumer) -> Any:
        tasks = len(asyncio.all_tasks())
        got = await consumer.wait_first(delivery(trace), consumer.suspend_flow.wait())
        assert len(asyncio.all_tasks()) == tasks
        return got

    got = run_with_consumer(memory_app, body)
    assert trace == ["in line", "delivered"]
    assert got.results == ["done"] and not got.stopped


def test_a_delivery_that_waits_goes_on_in_a_task_until_it_is_done(memory_app: faust.App) -> None:
    trace: list[str] = []

    async def body(consumer: Consumer) -> Any:
        gate = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, gate.set)
        return await consumer.wait_first(delivery(trace, gate), consumer.suspend_flow.wait())

    got = run_with_consumer(memory_app, body)
    assert trace == ["in line", "delivered"]  # started in line, resumed by the task
    assert got.results == ["done"]


def test_a_waiting_delivery_is_abandoned_when_a_rebalance_suspends_the_flow(
    memory_app: faust.App,
) -> None:
    trace: list[str] = []

    async def body(consumer: Consumer) -> Any:
        never = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, consumer.stop_flow)
        got = await consumer.wait_first(delivery(trace, never), consumer.suspend_flow.wait())
        await asyncio.sleep(0.01)  # the abandoned delivery sees its cancellation
        return got

    got = run_with_consumer(memory_app, body)
    assert trace == ["in line", "abandoned"]
    assert got.results == [True]  # the flow event won (its wait gives True), as in Faust


def test_with_the_flow_suspended_a_delivery_is_raced_in_a_task_as_faust_does(
    memory_app: faust.App,
) -> None:
    trace: list[str] = []

    async def body(consumer: Consumer) -> Any:
        consumer.stop_flow()
        return await consumer.wait_first(delivery(trace), consumer.suspend_flow.wait())

    run_with_consumer(memory_app, body)
    assert trace[:1] == ["in a task"]


def test_a_delivery_that_fails_at_once_raises_from_the_fetch_loop(memory_app: faust.App) -> None:
    async def failing() -> None:
        raise ValueError("bad message")

    async def body(consumer: Consumer) -> Any:
        with pytest.raises(ValueError, match="bad message"):
            await consumer.wait_first(failing(), consumer.suspend_flow.wait())
        # Any other wait is Faust's own.
        return await consumer.wait_first(asyncio.sleep(0, "slept"))

    got = run_with_consumer(memory_app, body)
    assert got.results == ["slept"]
