"""Issue 14 on the real broker: a failed output never loses input, and lateness
counts only events that fell outside their window.

The dead-letter topic is made to refuse records the way a production topic
can (its ``max.message.bytes`` set below the dead letter's size): the worker
must stop before the offset of the record behind the dead letter is
committed, and a worker started after the topic is fixed must count every
good event and write the dead letter.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

from models.profile import DAY_MS
from models.simulator import SimConfig, simulate
from streams.cli.admin import admin_client, create_topics
from streams.cli.process import WorkerProcess
from streams.offline import evaluate
from streams.producer import make_producer, send_events
from streams.settings import Settings
from tests.conftest import await_event_counts, fetch_profile, metric_total, read_topic
from tests.integration.helpers import expected_counts

# Below any dead letter of the bad record below (its bytes, base64, and the
# letter's other fields), far above nothing else: only dead letters go there.
SMALL_MAX_MESSAGE_BYTES = "600"
MARKER = b"poison-marker"


def send(settings: Settings, events: list[dict[str, Any]]) -> None:
    for _ in send_events(settings, events):
        pass


def set_max_message_bytes(settings: Settings, topic: str, value: str | None) -> None:
    """Set (or, with ``None``, remove) a topic's ``max.message.bytes`` override."""
    op = AlterConfigOp.DELETE if value is None else AlterConfigOp.SET
    admin = admin_client(settings)
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": (op, value)}
        )
        admin.alter_configs([resource], raise_on_unknown=False)
    finally:
        admin.close()


def committed_offset(settings: Settings, group: str, tp: TopicPartition) -> int | None:
    """The consumer group's committed offset of ``tp`` (``None``: nothing committed)."""
    admin = admin_client(settings)
    try:
        offsets = admin.list_group_offsets({group: [tp]}).get(group, {})
    finally:
        admin.close()
    committed = offsets.get(tp)
    return None if committed is None or committed.offset < 0 else committed.offset


def test_a_dead_letter_the_broker_refuses_stops_the_worker_before_any_commit(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    names = settings.topic_names()
    set_max_message_bytes(settings, names["dead_letters"], SMALL_MAX_MESSAGE_BYTES)
    good, _ = simulate(
        SimConfig(customers=20, days=6, seed=141, start=datetime(2026, 6, 1, tzinfo=UTC))
    )
    half = len(good) // 2
    victim = next(e["customer_id"] for e in good[half:] if e.get("customer_id"))

    worker = worker_factory("w1")
    worker.wait_ready()
    group = worker.env["APP_ID"]
    send(settings, good[:half])
    # Not JSON: a dead letter carrying ~1 KB of it, which the topic refuses.
    producer = make_producer(settings)
    try:
        bad = b'{"type": "page_view", ' + MARKER + b" " + b"x" * 700
        sent = producer.send(names["clickstream"], key=victim.encode(), value=bad)
        where = sent.get(timeout=30)
        producer.flush()
    finally:
        producer.close()
    send(settings, good[half:])

    assert worker.proc is not None
    try:
        code = worker.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running past a refused dead letter:\n{worker.tail_log(40)}")
    assert code == 70, worker.tail_log(40)
    bad_tp = TopicPartition(names["clickstream"], where.partition)
    committed = committed_offset(settings, group, bad_tp)
    # Nothing at or past the bad record was acknowledged.
    assert committed is None or committed <= where.offset, (committed, where.offset)
    log = worker.log_path.read_text(errors="replace")
    assert f"{names['clickstream']}/{where.partition}@{where.offset}" in log, worker.tail_log(40)
    assert MARKER.decode() not in log

    # The topic fixed, the next worker takes it from the last commit.
    set_max_message_bytes(settings, names["dead_letters"], None)
    worker = worker_factory("w1")
    worker.wait_ready()
    await_event_counts(worker, expected_counts(good))
    letters = [
        orjson.loads(r.value) for r in read_topic(settings, names["dead_letters"], expected=1)
    ]
    assert [(x["source_topic"], x["partition"], x["offset"]) for x in letters] == [
        (names["clickstream"], where.partition, where.offset)
    ]
    assert letters[0]["error_kind"] == "not_json"
    assert worker.alive(), worker.tail_log(40)


def late_events_total(worker: WorkerProcess) -> float:
    """``segstream_late_events_total`` summed over topics, from the worker's metrics."""
    _, body = worker.get("/metrics")
    name = "segstream_late_events_total"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(name + "{")
    )


def test_a_backlog_read_one_topic_ahead_counts_every_event_and_one_months_behind_is_stale(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    events, _ = simulate(
        SimConfig(customers=40, days=30, seed=142, start=datetime(2026, 7, 1, tzinfo=UTC))
    )
    # A backfill that loads orders and tickets before the clickstream: the
    # worker reads them, the clickstream stays quiet past INPUT_IDLE_S, so the
    # watermark that closes sessions runs to the end of the history before a
    # single click is read. Every click then arrives weeks "late", yet inside
    # the profile's windows.
    first = [e for e in events if e["topic"] != "clickstream"]
    then = [e for e in events if e["topic"] == "clickstream"]
    worker = worker_factory("w1", INPUT_IDLE_S="1")
    worker.wait_ready()
    send(settings, first)
    await_event_counts(worker, expected_counts(first))
    time.sleep(2)  # the quiet clickstream stops holding the watermark back
    send(settings, then)
    live = await_event_counts(worker, expected_counts(events))
    assert late_events_total(worker) == 0
    offline = {p["customer_id"]: p for p in evaluate(events, settings).summaries()}
    for customer_id, profile in live.items():
        assert profile["late_events"] == 0, customer_id
        for name in ("page_views", "product_views", "searches", "orders", "revenue"):
            got, want = (
                profile["windows"]["90d"][name],
                offline[customer_id]["windows"]["90d"][name],
            )
            assert got == want, (customer_id, name)

    # A click 91 days behind the customer's latest click is stale (over the
    # week of dedup memory: a replay, or a producer that far out of order).
    customer_id = sorted(live)[0]
    last_seen = live[customer_id]["last_seen_ms"]
    stale_ts = datetime.fromtimestamp((last_seen - 91 * DAY_MS) / 1000, tz=UTC)
    stale = {
        "topic": "clickstream",
        "schema_version": 1,
        "event_id": "stale-1",
        "type": "page_view",
        "ts": stale_ts.isoformat(),
        "customer_id": customer_id,
        "session_id": "stale-session",
        "channel": "web",
        "page": "/",
    }
    send(settings, [stale])
    deadline = time.monotonic() + 60
    while metric_total(worker, "segstream_stale_events_total") < 1:
        assert time.monotonic() < deadline, worker.tail_log(20)
        time.sleep(0.5)
    assert metric_total(worker, "segstream_stale_events_total", topic="clickstream") == 1
    assert late_events_total(worker) == 0
    profile = fetch_profile(worker, customer_id)
    assert profile is not None and profile["late_events"] == 0
    assert profile["event_counts"] == live[customer_id]["event_counts"]
