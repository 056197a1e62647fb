"""The cached Faust Prometheus sensor exposes what Faust's own one does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streams.faust_sensor import CachedPrometheusMonitor


class FakeTask:
    """A stream's owning task (weakly referenced by the sensor)."""


class FakeStream:
    """Just what the sensor reads of a stream (hashable, like Faust's)."""

    shortlabel = "Stream: segstream.clickstream"

    def __init__(self) -> None:
        self.task_owner = FakeTask()


def exposition(monitor_type: type[PrometheusMonitor]) -> list[str]:
    registry = CollectorRegistry()
    monitor: Any = monitor_type(metrics=FaustMetrics.create(registry, "t"))
    tp = TP("segstream.clickstream", 3)
    table = SimpleNamespace(name="profiles")
    stream = FakeStream()
    for offset in range(5):
        monitor.on_message_in(tp, offset, SimpleNamespace(time_in=None))
        state = monitor.on_stream_event_in(tp, offset, stream, None)
        monitor.on_stream_event_out(tp, offset, stream, None, state)
        monitor.on_table_get(table, "c1")
        monitor.on_table_set(table, "c1", {})
        monitor.on_send_initiated(None, "segstream.segment-changes", None, 2, 10)
    monitor.on_table_del(table, "c1")
    lines = generate_latest(registry).decode().splitlines()
    # Timings and creation times differ run to run; names, labels and counts must not.
    return sorted(
        line
        for line in lines
        if not line.startswith("#")
        and "latency" not in line
        and "runtime" not in line
        and "_created" not in line.split("{")[0]
    )


def test_cached_sensor_exposes_the_same_samples_as_faust_s_own() -> None:
    ours = exposition(CachedPrometheusMonitor)
    theirs = exposition(PrometheusMonitor)
    assert ours == theirs
    assert 't_messages_received_per_topic_total{topic="segstream.clickstream"} 5.0' in ours
    assert any(
        line.startswith("t_table_operations_total") and "keys_updated" in line for line in ours
    )
