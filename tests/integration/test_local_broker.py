"""The local broker keeps its data: kill -9, `segstream kafka start`, reset, tools.

Every step runs the ``segstream`` command line in a child process, with
``SEGSTREAM_KAFKA_HOME`` pointing at a directory of this test, exactly as a
user would; the broker is the real one, never the session's shared broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streams.cli.local_kafka import LocalKafka

TOPIC = "orders.kept"
GROUP = "keeper"
PARTITIONS = 3
RECORDS = 300


class Cli:
    """``segstream`` with its broker home in a directory of the test."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "SEGSTREAM_KAFKA_HOME": str(home), "COLUMNS": "200"}
        # The tool command must find the local broker, not an external one.
        self.env.pop("SEGSTREAM_KAFKA_BOOTSTRAP", None)

    def run(self, *args: str, expect: int = 0) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            cwd=self.home.parent,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == expect, f"segstream {' '.join(args)}: {output}"
        return output

    def broker(self) -> LocalKafka:
        broker = LocalKafka.from_state(self.home)
        assert broker is not None, f"no {self.home}/broker.json"
        return broker


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(tmp_path / "kafka")
    try:
        yield cli
    finally:
        broker = LocalKafka.from_state(cli.home)
        if broker is not None:
            broker.stop()


def fill(bootstrap: str) -> dict[TopicPartition, int]:
    """Create the topic, write the records, consume them all as GROUP and commit.

    Returns the committed offset of each partition.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for n in range(RECORDS):
        producer.send(TOPIC, key=f"k{n % 17}".encode(), value=f"v{n}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < RECORDS and time.monotonic() < deadline:
            seen += sum(len(batch) for batch in consumer.poll(1000).values())
        assert seen == RECORDS
        consumer.commit()
    finally:
        consumer.close()
    committed = committed_offsets(bootstrap)
    assert sum(committed.values()) == RECORDS
    return committed


def committed_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({GROUP: None})[GROUP]
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC}


def topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def read_all(bootstrap: str) -> list[Any]:
    """Every record of TOPIC from the beginning, without a group."""
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < RECORDS and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def kill_9(broker: LocalKafka) -> None:
    assert broker.pid is not None and broker.running()
    os.kill(broker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while broker.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not broker.running()


def test_kill_9_then_kafka_start_keeps_topics_records_and_offsets_and_tools_see_them(
    cli: Cli,
) -> None:
    assert "Formatted a new broker" in cli.run("kafka", "start", "--port", "0")
    before = cli.broker()
    cluster_id = before.cluster_id()
    committed = fill(before.bootstrap)
    written = sorted((r.partition, r.offset, r.key, r.value) for r in read_all(before.bootstrap))
    assert len(written) == RECORDS

    kill_9(before)
    # The crash leaves a state file whose PID is dead: the case that used to wipe everything.
    assert "no local broker running" in cli.run("kafka", "status", expect=1)
    started = time.monotonic()
    out = cli.run("kafka", "start")
    restart_s = time.monotonic() - started

    after = cli.broker()
    assert f"Started again with its data in {cli.home} (cluster id {cluster_id})" in out
    assert after.cluster_id() == cluster_id
    assert after.pid != before.pid
    assert TOPIC in topics(after.bootstrap)
    again = sorted((r.partition, r.offset, r.key, r.value) for r in read_all(after.bootstrap))
    assert again == written
    assert committed_offsets(after.bootstrap) == committed
    print(f"kafka start after kill -9 took {restart_s:.1f} s")

    # Kafka's own tools, run through `segstream kafka tool`, see the same.
    listed = cli.run("kafka", "tool", "kafka-topics", "--list")
    assert TOPIC in listed.split()
    described = cli.run("kafka", "tool", "kafka-consumer-groups", "--describe", "--group", GROUP)
    rows = [line.split() for line in described.splitlines() if line.startswith(GROUP)]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert {(int(row[2]), int(row[3]), row[5]) for row in rows} == {
        (tp.partition, offset, "0") for tp, offset in committed.items()
    }
    assert "unknown Kafka tool" in cli.run("kafka", "tool", "kafka-nope", expect=1)


def test_stop_and_start_keep_the_data_and_only_reset_wipes_it(cli: Cli) -> None:
    cli.run("kafka", "start", "--port", "0")
    first = cli.broker()
    cluster_id = first.cluster_id()
    committed = fill(first.bootstrap)

    assert "stopped" in cli.run("kafka", "stop")
    cli.run("kafka", "start")
    assert cli.broker().cluster_id() == cluster_id
    assert committed_offsets(cli.broker().bootstrap) == committed

    refused = cli.run("kafka", "reset", "--yes", expect=1)
    assert "stop it first" in refused
    assert TOPIC in topics(cli.broker().bootstrap)

    cli.run("kafka", "stop")
    assert "deleted" in cli.run("kafka", "reset", "--yes")
    assert not cli.home.exists()

    assert "Formatted a new broker" in cli.run("kafka", "start", "--port", "0")
    fresh = cli.broker()
    assert fresh.cluster_id() not in (None, cluster_id)
    assert TOPIC not in topics(fresh.bootstrap)
