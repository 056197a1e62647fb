"""Issue 14 on the real broker: input at the size limits, and ids that are not safe text.

An 800 KB value, and separately a 500 KB key, each followed by 200 valid page
views: each is one bounded dead letter with the original sizes and SHA-256,
and every good event is counted (before, the dead letter itself was too large
to send and the rest of the batch was lost). Over the web API, an id with a
control character is refused with 400, and an over-long URL is refused
before authentication without any part of it in the worker's log.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from schemas.decode import DEAD_LETTER_MAX_BYTES
from streams.cli.admin import create_topics
from streams.cli.process import WorkerProcess
from streams.producer import make_producer
from streams.settings import Settings
from tests.conftest import await_event_counts, read_topic

GOOD_EVENTS = 200
CUSTOMERS = 50  # four page views each, spread over every input partition
# A dead letter holds two base64 prefixes and a few small fields.
LETTER_BOUND_BYTES = 4 * DEAD_LETTER_MAX_BYTES // 3 * 2 + 4096
# NUL, newline, RTL override, zero-width space, ANSI escape, trailing space, too long.
UNSAFE_ID_PATHS = [
    "/customers/%00x",
    "/customers/c1%0A",
    "/customers/%E2%80%AEc1",
    "/customers/%E2%80%8Bc1",
    "/customers/%1B%5B31mc1",
    "/customers/c1%20",
    "/customers/" + "c" * 129,
]


def page_views(phase: str) -> list[tuple[bytes, bytes]]:
    """``GOOD_EVENTS`` valid page views (key, value), in event-time order."""
    start_ms = int(time.time() * 1000) - 3_600_000
    views = []
    for n in range(GOOD_EVENTS):
        customer_id = f"{phase}-c{n % CUSTOMERS:03d}"
        event = {
            "event_id": f"{phase}-e{n:04d}",
            "customer_id": customer_id,
            "ts": start_ms + n * 1000,
            "type": "page_view",
            "session_id": f"{phase}-s{n % CUSTOMERS:03d}",
            "page": f"/products/{n}",
        }
        views.append((customer_id.encode(), orjson.dumps(event)))
    return views


def metric_total(worker: WorkerProcess, name: str) -> float:
    _, text = worker.get("/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name
    )


def check_letter(record: Any, key: bytes, value: bytes, kind: str) -> None:
    assert len(record.value) < LETTER_BOUND_BYTES, len(record.value)
    assert record.key is not None and len(record.key) <= DEAD_LETTER_MAX_BYTES
    letter = orjson.loads(record.value)
    assert letter["error_kind"] == kind
    assert letter["truncated"] is True
    assert (letter["key_size_bytes"], letter["value_size_bytes"]) == (len(key), len(value))
    assert letter["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(letter["key_b64"]) == key[:DEAD_LETTER_MAX_BYTES]
    assert base64.b64decode(letter["value_b64"]) == value[:DEAD_LETTER_MAX_BYTES]


def test_an_oversized_value_or_key_is_one_bounded_dead_letter_and_no_good_event_is_lost(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    names = settings.topic_names()
    worker = worker_factory()
    worker.wait_ready()
    # Within the broker's default 1 MB record limit, like the probe's records.
    producer = make_producer(settings, max_request_size=1_048_000)
    huge_value = orjson.dumps(
        {"event_id": "big", "customer_id": "big-c1", "type": "page_view", "page": "x" * 800_000}
    )
    # A valid page view of c1 under a 500 KB key: rejected for the key alone.
    ts_ms = int(time.time() * 1000) - 7_200_000
    view_of_c1 = orjson.dumps(
        {"event_id": "bigkey", "customer_id": "c1", "ts": ts_ms, "type": "page_view"}
    )
    phases: list[tuple[str, bytes, bytes, str]] = [
        ("value", b"big-c1", huge_value, "oversized"),
        ("key", b"k" * 500_000, view_of_c1, "key_mismatch"),
    ]
    for done, (phase, key, value, kind) in enumerate(phases, start=1):
        producer.send(names["clickstream"], key=key, value=value).get(timeout=30)
        for view_key, view in page_views(phase):
            producer.send(names["clickstream"], key=view_key, value=view)
        producer.flush()

        expected = {f"{phase}-c{c:03d}": {"clickstream.page_view": 4} for c in range(CUSTOMERS)}
        await_event_counts(worker, expected, timeout_s=120)
        letters = read_topic(settings, names["dead_letters"], expected=done, timeout_s=60)
        assert len(letters) == done, f"{phase}: {len(letters)} dead letters, want {done}"
        digest = hashlib.sha256(value).hexdigest()
        [letter] = [r for r in letters if orjson.loads(r.value)["value_sha256"] == digest]
        check_letter(letter, key, value, kind)
        assert metric_total(worker, "segstream_dead_letters_total") == done
    producer.close()

    assert metric_total(worker, "segstream_events_consumed_total") == len(phases) * GOOD_EVENTS
    assert worker.alive()
    log = worker.log_path.read_text(errors="replace")
    assert "ProducerSendError" not in log and "MessageSizeTooLarge" not in log


def test_unsafe_and_over_long_ids_in_urls_are_refused_and_never_logged(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(settings)
    worker = worker_factory()
    worker.wait_ready()

    for path in UNSAFE_ID_PATHS:
        status, body = worker.get(path)
        assert status == 400, (path, status)
        assert b"invalid customer id" in body
        status, _ = worker.request(path, method="DELETE")
        assert status == 400, (path, status)
    # Letters of any script are ids like any other: unknown here, so 404.
    assert worker.get("/customers/Zo%C3%AB-%E9%A1%A7%E5%AE%A2")[0] == 404

    marker = f"MARKER{uuid.uuid4().hex}"
    long_id = "q7Z" * 3000 + marker
    status, body = worker.get(f"/customers/{long_id}")
    assert status in (400, 414), status
    # The worker goes on serving.
    assert worker.get("/healthz")[0] == 200

    deadline = time.monotonic() + 10
    log = ""
    while time.monotonic() < deadline:
        log = worker.log_path.read_text(errors="replace")
        if "refused a malformed HTTP request" in log:
            break
        time.sleep(0.2)
    assert "refused a malformed HTTP request status=400 error=LineTooLong" in log
    assert marker not in log
    assert "q7Zq7Z" not in log
    assert "Traceback" not in log
    assert "\x00" not in log and "\u202e" not in log
