"""Issue 8, security, on the real broker: the profile and admin endpoints
need the bearer token, probes and metrics stay open, a worker without a
token refuses to start, and customer ids stay out of the worker's log.
Issue 14: a correctly signed snapshot that runs code is refused, and a
worker with a placeholder key refuses to start."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from models.training import ModelBundle, ModelConfig, encode_snapshot
from streams.auth import WWW_AUTHENTICATE
from streams.cli.admin import create_topics
from streams.cli.process import WorkerProcess
from streams.producer import make_producer, send_events
from streams.settings import Settings
from tests.conftest import fetch_profile
from tests.unit.test_security import exploits, malicious_snapshot

CANARY = "pii-canary-customer-5f1c"
CANARY_ANONYMOUS = "pii-canary-anonymous-9b2e"


def call(
    worker: WorkerProcess, path: str, authorization: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A request with exactly the ``Authorization`` header given: status, headers, body."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    request = urllib.request.Request(worker.url + path, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read()


def canary_events() -> list[dict[str, Any]]:
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    ts = [(start + timedelta(minutes=m)).isoformat() for m in range(4)]
    return [
        {"topic": "clickstream", "event_id": "sec-1", "anonymous_id": CANARY_ANONYMOUS,
         "ts": ts[0], "type": "page_view", "channel": "web", "session_id": "sec-s1"},
        {"topic": "clickstream", "event_id": "sec-2", "anonymous_id": CANARY_ANONYMOUS,
         "customer_id": CANARY, "ts": ts[1], "type": "identify", "channel": "web",
         "session_id": "sec-s1"},
        {"topic": "clickstream", "event_id": "sec-3", "customer_id": CANARY, "ts": ts[2],
         "type": "product_view", "channel": "web", "session_id": "sec-s1"},
        {"topic": "purchases", "event_id": "sec-4", "order_id": "sec-o1", "customer_id": CANARY,
         "ts": ts[3], "type": "order", "amount": 42.0, "currency": "EUR", "channel": "web",
         "items": [{"sku": "sku-1", "category": "books", "qty": 1, "unit_price": 42.0}]},
    ]  # fmt: skip


def test_profile_endpoints_need_the_token_and_probes_and_metrics_stay_open(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    worker = worker_factory()
    worker.wait_ready()
    token = worker.web_token
    assert token

    for authorization in (None, "Bearer wrong-token", f"Basic {token}", "Bearer ", token):
        status, headers, body = call(worker, "/customers/x", authorization)
        assert status == 401, authorization
        assert headers["WWW-Authenticate"] == WWW_AUTHENTICATE
        assert orjson.loads(body)["error"]
        assert call(worker, "/customers/x", authorization, method="DELETE")[0] == 401
    status, _, body = call(worker, "/customers/x", f"Bearer {token}")
    assert status == 404, body
    assert orjson.loads(body) == {"error": "unknown customer"}
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert call(worker, open_path)[0] == 200, open_path

    # Personal data on every path that logs: events, identity stitching, a
    # dead letter keyed by the customer, erasure.
    for _ in send_events(settings, canary_events()):
        pass
    producer = make_producer(settings)
    producer.send(settings.topic_names()["purchases"], key=CANARY.encode(), value=b"{not json")
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 60
    profile = None
    while time.monotonic() < deadline:
        profile = fetch_profile(worker, CANARY)
        if profile is not None and profile["events"] == 3:
            break
        time.sleep(0.5)
    assert profile is not None and profile["events"] == 3, worker.tail_log()
    status, _ = worker.request(f"/customers/{CANARY}", method="DELETE")
    assert status == 202
    while fetch_profile(worker, CANARY) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fetch_profile(worker, CANARY) is None
    log = worker.log_path.read_text(errors="replace")
    assert "dead letter" in log  # the log does record what happened ...
    assert CANARY not in log and CANARY_ANONYMOUS not in log  # ... but not to whom
    assert token not in log


def test_a_worker_without_a_token_refuses_to_start_and_says_what_to_set(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory("no-token", WEB_TOKEN="")
    assert worker.proc is not None
    assert worker.proc.wait(timeout=120) != 0
    log = worker.log_path.read_text(errors="replace")
    assert "SEGSTREAM_WEB_TOKEN" in log and "SEGSTREAM_WEB_AUTH=false" in log, log


def test_with_auth_switched_off_and_no_token_the_profile_endpoint_is_open(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory("open", WEB_TOKEN="", WEB_AUTH="false")
    worker.wait_ready()
    assert call(worker, "/customers/x")[0] == 404


# --- Issue 14: no code from the wire ------------------------------------------


def rejected_snapshots(worker: WorkerProcess) -> float:
    """``segstream_model_snapshots_rejected_total`` on the worker's /metrics."""
    status, body = worker.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "segstream_model_snapshots_rejected":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("segstream_model_snapshots_rejected is not exposed")


def model_version(worker: WorkerProcess) -> float:
    status, body = worker.get("/models")
    assert status == 200, body
    return float(orjson.loads(body)["version"])


def test_a_correctly_signed_snapshot_that_runs_commands_is_refused_by_a_live_worker(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Issue 14's exploit: a pickle signed with the worker's own key, on the
    snapshot topic, that runs `id`, a subprocess, exec, eval, or exec
    reached by getattr alone."""
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    markers = tmp_path / "markers"
    markers.mkdir()
    payloads = exploits(markers)
    # The attacker knows the key (the old default was public): the worker's own.
    key = settings.model_snapshot_key.get_secret_value()
    topic = settings.topic_names()["model_snapshots"]
    producer = make_producer(settings)

    def publish(data: bytes) -> None:
        producer.send(topic, key=b"models", value=data).get(timeout=30)

    # One waits on the compacted topic before the worker starts (read at
    # every start), the others arrive while it runs.
    first, *later = payloads
    publish(malicious_snapshot(payloads[first], key.encode()))
    worker = worker_factory()
    assert worker.env["MODEL_SNAPSHOT_KEY"] == key
    worker.wait_ready()
    for route in later:
        publish(malicious_snapshot(payloads[route], key.encode()))
    # A genuine snapshot after them: the key is right and the follower reads on.
    genuine = ModelBundle(ModelConfig())
    genuine.version = 3
    publish(encode_snapshot(genuine, key.encode()))
    producer.close()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if rejected_snapshots(worker) >= len(payloads) and model_version(worker) == 3:
            break
        time.sleep(0.5)
    assert rejected_snapshots(worker) == len(payloads), worker.tail_log()
    assert model_version(worker) == 3
    assert sorted(p.name for p in markers.iterdir()) == []  # nothing ran
    assert worker.alive()
    log = worker.log_path.read_text(errors="replace")
    assert log.count("model snapshot rejected") == len(payloads), log


def test_a_worker_with_a_placeholder_key_refuses_to_start_and_names_it(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory("placeholder", MODEL_SNAPSHOT_KEY="change-me")
    assert worker.proc is not None
    assert worker.proc.wait(timeout=120) != 0
    log = worker.log_path.read_text(errors="replace")
    assert "SEGSTREAM_MODEL_SNAPSHOT_KEY" in log, log
    assert "SEGSTREAM_AUDIT_HASH_KEY" not in log  # that one was set
