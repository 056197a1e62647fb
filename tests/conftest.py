"""Shared fixtures: the real Kafka broker, settings and worker factories.

Integration tests (``tests/integration``) get a session-scoped broker: the
local KRaft node from ``streams.cli.local_kafka``, or the one named by
``SEGSTREAM_KAFKA_BOOTSTRAP`` when that is set. Kafka is never mocked.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.cli.local_kafka import LocalKafka, free_port, kafka_version
from streams.cli.process import WorkerProcess
from streams.settings import ENV_PREFIX, Settings, throwaway_secrets

EXTERNAL_BOOTSTRAP = os.environ.get(ENV_PREFIX + "KAFKA_BOOTSTRAP")


def pytest_report_header(config: pytest.Config) -> str:
    if EXTERNAL_BOOTSTRAP:
        return f"kafka: external broker at {EXTERNAL_BOOTSTRAP}"
    return f"kafka: local Apache Kafka {kafka_version()} (KRaft, started by the test session)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Bootstrap servers of a real broker for the whole test session."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if EXTERNAL_BOOTSTRAP:
        yield EXTERNAL_BOOTSTRAP
        return
    broker = LocalKafka(home=tmp_path_factory.mktemp("kafka")).start()
    if reporter is not None:
        reporter.write_line(
            f"\nstarted Apache Kafka {broker.version} (KRaft) at {broker.bootstrap}"
        )
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def secret_keys() -> dict[str, str]:
    """Random secret keys (``WorkerProcess`` env names), shared by one test's
    settings and workers: a worker refuses the placeholders, and snapshots
    the test reads must verify with the workers' key."""
    return throwaway_secrets()


@pytest.fixture
def app_id() -> str:
    """A fresh app id (consumer group, changelog topic names), shared by one test's
    settings and workers, so tests on one broker never share changelogs."""
    return f"segstream-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings_factory(
    tmp_path: Path, secret_keys: dict[str, str], app_id: str
) -> Callable[..., Settings]:
    """Settings isolated from the environment, with overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "store": "memory"}
        values["app_id"] = app_id
        values.update({name.lower(): key for name, key in secret_keys.items()})
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix so tests on one broker never share topics."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def worker_factory(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
    secret_keys: dict[str, str],
    app_id: str,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``segstream worker`` processes; all are stopped at teardown."""
    started: list[WorkerProcess] = []
    # Shared by the test's workers, which forward profile requests to each other.
    web_token = f"test-token-{uuid.uuid4().hex}"

    def start(name: str = "w1", **env: str) -> WorkerProcess:
        values = {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "APP_ID": app_id,
            "TOPIC_PREFIX": topic_prefix,
            "DATA_DIR": str(tmp_path / name / "data"),
            "WEB_PORT": str(free_port()),
            "INPUT_PARTITIONS": "4",
            # A killed worker's partitions move after this; Kafka's minimum.
            "GROUP_SESSION_TIMEOUT_S": "6",
            # The profile endpoints require one; worker.get sends it.
            "WEB_TOKEN": web_token,
            # A worker refuses the placeholder keys.
            **secret_keys,
        }
        values.update(env)
        worker = WorkerProcess(env=values, log_path=tmp_path / name / "worker.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def read_topic(
    settings: Settings, topic: str, expected: int, timeout_s: float = 60.0, **overrides: Any
) -> list[Any]:
    """Every record of ``topic`` from the beginning, once ``expected`` are there.

    ``overrides`` are kafka-python consumer settings (``check_crcs``, …).
    """
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "consumer_timeout_ms": 1000,
        **settings.kafka_python_config(),
        **overrides,
    }
    consumer = KafkaConsumer(topic, **config)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            records.extend(consumer)
            if len(records) >= expected:
                # Keep reading briefly: more than expected is a failure too.
                records.extend(consumer)
                break
    finally:
        consumer.close()
    return records


def fetch_profile(worker: WorkerProcess, customer_id: str) -> dict[str, Any] | None:
    """A worker's profile of a customer, or ``None`` when it answers 404."""
    import orjson

    status, body = worker.get(f"/customers/{customer_id}")
    return orjson.loads(body) if status == 200 else None


def await_event_counts(
    worker: WorkerProcess, expected: dict[str, Any], timeout_s: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Poll until every customer's ``event_counts`` equals ``expected``; return profiles.

    Fails with the number of customers still differing (and the worker log).
    """
    pending = dict(expected)
    profiles: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for customer_id in list(pending):
            try:
                profile = fetch_profile(worker, customer_id)
            except OSError:  # a reset while the worker rebalances: ask again
                continue
            if profile is not None and profile["event_counts"] == dict(expected[customer_id]):
                profiles[customer_id] = profile
                del pending[customer_id]
        if pending:
            time.sleep(0.5)
    assert not pending, f"{len(pending)} profiles differ:\n{worker.tail_log(20)}"
    return profiles


def metric_total(worker: WorkerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples (those with ``labels``) a worker exposes now."""
    from prometheus_client.parser import text_string_to_metric_families

    _, text = worker.get("/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def settled_profiles(
    worker: WorkerProcess, expected: dict[str, Any], as_of_ms: int
) -> dict[str, dict[str, Any]]:
    """Profiles once every partition's watermark has reached ``as_of_ms``."""
    profiles = await_event_counts(worker, expected)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        profiles = {c: fetch_profile(worker, c) or {} for c in expected}
        if all(p.get("as_of_ms") == as_of_ms for p in profiles.values()):
            break
        time.sleep(0.5)
    return profiles
