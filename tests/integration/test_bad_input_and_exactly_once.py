"""Issue 3's acceptance on the real broker: simulator output mixed with every
bad-input kind; each bad record lands in the dead-letter topic with its reason,
and every good event reaches the profile table exactly once — redeliveries
included."""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from models.simulator import MALFORMED_KINDS, SimConfig, simulate
from streams.cli.admin import create_topics
from streams.cli.process import WorkerProcess
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import metric_total, read_topic
from tests.integration.helpers import expected_counts

DECODER_KIND = {
    "negative_amount": "amount_out_of_range",
    "absurd_amount": "amount_out_of_range",
    "future_time": "time_out_of_range",
    "ancient_time": "time_out_of_range",
}


def test_bad_records_reach_dead_letters_and_good_ones_count_exactly_once(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    config = SimConfig(
        customers=120,
        days=30,
        seed=1234,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        malformed_rate=0.02,
    )
    events, _ = simulate(config)
    bad = [e for e in events if "malformed" in e]
    good = [e for e in events if "malformed" not in e]
    assert {e["malformed"] for e in bad} == set(MALFORMED_KINDS)

    worker = worker_factory()
    worker.wait_ready()
    # At-least-once redelivery replays recent events: each of the first 40
    # customers' last 8 events is delivered a second time.
    recent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in good:
        if "customer_id" in e and e["customer_id"] < "c000040" and e["type"] != "identify":
            recent[e["customer_id"]].append(e)
    redelivered = [e for events_of in recent.values() for e in events_of[-8:]]
    for _ in send_events(settings, events + redelivered):
        pass

    letters = read_topic(settings, settings.topic_names()["dead_letters"], expected=len(bad))
    # A dead letter keeps a bounded prefix of the bytes and the whole value's digest.
    kept = settings.dead_letter_max_bytes
    got = Counter(
        (letter["error_kind"], base64.b64decode(letter["value_b64"]), letter["value_sha256"])
        for letter in (orjson.loads(m.value) for m in letters)
    )
    want = Counter(
        (kind, e["raw"][:kept], hashlib.sha256(e["raw"]).hexdigest())
        for e, kind in ((e, DECODER_KIND.get(e["malformed"], e["malformed"])) for e in bad)
    )
    assert got == want, (want - got, got - want)
    letter = orjson.loads(letters[0].value)
    assert letter["source_topic"].startswith(topic_prefix)
    assert letter["error"] and letter["failed_at_ms"] > 0 and letter["offset"] >= 0

    expected = expected_counts(events)
    deadline = time.monotonic() + 90
    mismatched: dict[str, Any] = dict(expected)
    while mismatched and time.monotonic() < deadline:
        for customer_id in list(mismatched):
            status, body = worker.get(f"/customers/{customer_id}")
            if status == 200 and orjson.loads(body)["event_counts"] == dict(expected[customer_id]):
                del mismatched[customer_id]
        time.sleep(1)
    assert not mismatched, f"{len(mismatched)} profiles differ from the ground truth"
    _, metrics_text = worker.get("/metrics")
    # Refused: duplicates by id, or stale (over a week older than the
    # watermark when a quiet customer's last events were redelivered).
    refused = metric_total(worker, "segstream_duplicate_events_total") + metric_total(
        worker, "segstream_stale_events_total"
    )
    assert refused == sum(1 for e in redelivered if e["type"] != "identify")
    assert b"segstream_dead_letters_total" in metrics_text
    assert worker.alive(), "a bad record must never stop the worker"
