"""Issue 5 on the real broker: one global model that every worker scores with.

Two workers share the input partitions; training examples from both reach
the one trainer; every worker follows the signed snapshots and serves
profiles scored with the same model version. A tampered snapshot is
refused, and a restarted worker resumes from the newest snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from models.simulator import SimConfig, simulate
from models.training import ModelBundle, ModelConfig, encode_snapshot
from streams.cli.process import WorkerProcess
from streams.producer import make_producer, send_events
from streams.settings import Settings
from tests.conftest import fetch_profile

# A short horizon and small warm-up so labels resolve and clusters seed
# within a 40-day history of 150 customers.
MODEL_ENV = {
    "CHURN_HORIZON_DAYS": "7",
    "CHURN_MIN_LABELS": "5",
    "MODEL_WARMUP_EXAMPLES": "50",
}


def models_of(worker: WorkerProcess) -> dict[str, Any]:
    status, body = worker.get("/models")
    assert status == 200, body
    result: dict[str, Any] = orjson.loads(body)
    return result


def settled_version(workers: list[WorkerProcess], timeout_s: float = 120.0) -> int:
    """Wait until every worker scores with the same model version, unchanged for 5 s."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, ...] = ()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        versions = tuple(models_of(w)["version"] for w in workers)
        if versions != last:
            last, stable_since = versions, time.monotonic()
        elif len(set(versions)) == 1 and versions[0] > 0 and time.monotonic() - stable_since > 5:
            return versions[0]
        time.sleep(0.5)
    raise AssertionError(f"workers never agreed on a model version: {last}")


def test_two_workers_score_with_the_same_model_version(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events, truth = simulate(
        SimConfig(customers=150, days=40, seed=51, start=datetime(2026, 5, 1, tzinfo=UTC))
    )
    first = worker_factory("w1", **MODEL_ENV)
    second = worker_factory("w2", **MODEL_ENV)
    first.wait_ready()
    second.wait_ready()
    for _ in send_events(settings, events):
        pass

    version = settled_version([first, second])
    described = models_of(first)
    assert described == models_of(second)
    assert described["examples"] > 0
    assert described["clusters_ready"], described
    assert described["churn"]["labels"]["retained"] + described["churn"]["labels"]["churned"] > 0

    # Profiles answered by either worker (forwarded to the owner) carry
    # scores from that same version, with an explanation and a persona.
    for customer in [t.customer_id for t in truth[:20]]:
        for worker in (first, second):
            profile = fetch_profile(worker, customer)
            assert profile is not None
            scores = profile["scores"]
            assert scores["model_version"] == version
            assert 0.0 <= scores["churn_probability"] <= 1.0
            assert scores["churn_explanation"]
            assert scores["cluster_id"] in range(6)
            assert scores["persona"]

    # Metrics follow the snapshot.
    status, text = first.get("/metrics")
    assert status == 200
    assert f"segstream_model_version {float(version)}" in text.decode()

    # A snapshot signed with another key is refused, whatever version it claims.
    forged = ModelBundle(ModelConfig())
    forged.version = version + 1000
    producer = make_producer(settings)
    producer.send(
        settings.topic_names()["model_snapshots"],
        key=b"models",
        value=encode_snapshot(forged, b"not-the-key"),
    )
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = first.get("/metrics")[1].decode()
        if "segstream_model_snapshots_rejected_total 1.0" in text:
            break
        time.sleep(0.5)
    assert "segstream_model_snapshots_rejected_total 1.0" in text
    assert models_of(first)["version"] == version

    # A restarted worker resumes from the newest snapshot, not from scratch.
    examples = described["examples"]
    second.stop()
    first.stop()
    again = worker_factory("w1", **MODEL_ENV)
    again.wait_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and models_of(again)["version"] < version:
        time.sleep(0.5)
    resumed = models_of(again)
    assert resumed["version"] >= version
    assert resumed["examples"] >= examples
