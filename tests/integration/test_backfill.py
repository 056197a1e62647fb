"""`replay --historical` on the real broker: a backfill records segments, messages nobody."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from models.simulator import SimConfig, simulate
from streams.cli.process import WorkerProcess
from streams.producer import mark_historical, send_events
from streams.settings import Settings
from tests.conftest import await_event_counts, metric_total, read_topic
from tests.integration.helpers import expected_counts


def test_a_historical_backfill_sends_historical_changes_and_no_trigger(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=90)
    events, _ = simulate(SimConfig(customers=25, days=45, seed=77, start=start))
    events = [e for e in events if "malformed" not in e]
    worker = worker_factory(INPUT_IDLE_S="2")
    worker.wait_ready()
    for _ in send_events(settings, [mark_historical(e) for e in events]):
        pass
    await_event_counts(worker, expected_counts(events))
    # Wait until the idle topics let the last deadlines fire, and the counts settle.
    deadline, previous = time.monotonic() + 60, -1.0
    while time.monotonic() < deadline:
        time.sleep(4)
        changes = metric_total(worker, "segstream_segment_changes_total")
        if changes == previous:
            break
        previous = changes
    withheld = metric_total(worker, "segstream_historical_triggers_total")
    assert changes > 0 and withheld > 0
    assert metric_total(worker, "segstream_triggers_total") == 0
    records = read_topic(settings, settings.topic_names()["segment_changes"], int(changes))
    assert len(records) == changes
    assert all(orjson.loads(r.value)["historical"] is True for r in records)
    assert read_topic(settings, settings.topic_names()["triggers"], 1, timeout_s=3) == []
