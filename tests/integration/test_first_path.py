"""The first path end to end on the real broker: clickstream → worker → table → API."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from streams.cli.admin import create_topics
from streams.cli.demo import sample_events
from streams.cli.process import WorkerProcess
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import fetch_profile


def test_clickstream_events_are_counted_per_customer_by_a_worker(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    settings = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    first = create_topics(settings)
    assert set(first.values()) == {"created"}
    assert set(create_topics(settings).values()) == {"exists"}  # idempotent

    worker = worker_factory()
    worker.wait_ready()
    events = list(sample_events(customers=12))
    for _ in send_events(settings, events):
        pass
    expected = Counter(e["customer_id"] for e in events)

    deadline = time.monotonic() + 60
    seen: dict[str, object] = {}
    while time.monotonic() < deadline and len(seen) < len(expected):
        for customer_id, count in expected.items():
            profile = fetch_profile(worker, customer_id)
            if profile is not None and profile["events"] == count:
                seen[customer_id] = profile
        time.sleep(0.5)
    assert set(seen) == set(expected), worker.tail_log()
    assert fetch_profile(worker, "nobody") is None
    status, _ = worker.get("/customers/nobody")
    assert status == 404
