"""Faust's Prometheus sensor, with its per-message label lookups cached.

``faust.sensors.prometheus.PrometheusMonitor`` looks up a labelled child
(``Counter.labels(...)``, a lock and a dict under it) for every message in,
every stream event, every table read and write and every send, and rebuilds
the stream label with a regular expression per event: about 5% of a busy
worker's CPU. This subclass exposes exactly the same metric families and
labels, resolving each labelled child once.
"""

from __future__ import annotations

from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, CollectionT, EventT, Message, ProducerT, StreamT
from faust.types.tuples import PendingMessage

from streams.internals import stream_label


class CachedPrometheusMonitor(PrometheusMonitor):
    """:class:`PrometheusMonitor` with labelled children resolved once."""

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        # Our own reference to the families Faust's sensor keeps privately.
        self.families = metrics
        self._labelled: dict[tuple[str, tuple[Any, ...]], Any] = {}
        self._stream_labels: dict[int, str] = {}

    def _child(self, family: str, **labels: Any) -> Any:
        key = (family, tuple(labels.items()))
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = getattr(self.families, family).labels(**labels)
        return child

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        Monitor.on_message_in(self, tp, offset, message)
        self.families.messages_received.inc()
        self.families.active_messages.inc()
        self._child("messages_received_per_topics", topic=tp.topic).inc()
        self._child(
            "messages_received_per_topics_partition", topic=tp.topic, partition=tp.partition
        ).set(offset)

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        self.families.total_events.inc()
        self.families.total_active_events.inc()
        label = self._stream_labels.get(id(stream))
        if label is None:
            label = self._stream_labels[id(stream)] = stream_label(self, stream)
        self._child("total_events_per_stream", stream=f"stream.{label}.events").inc()
        return state

    def on_table_get(self, table: CollectionT, key: Any) -> None:
        Monitor.on_table_get(self, table, key)
        self._child(
            "table_operations", table=f"table.{table.name}", operation=self.KEYS_RETRIEVED
        ).inc()

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        Monitor.on_table_set(self, table, key, value)
        self._child(
            "table_operations", table=f"table.{table.name}", operation=self.KEYS_UPDATED
        ).inc()

    def on_table_del(self, table: CollectionT, key: Any) -> None:
        Monitor.on_table_del(self, table, key)
        self._child(
            "table_operations", table=f"table.{table.name}", operation=self.KEYS_DELETED
        ).inc()

    def on_send_initiated(
        self,
        producer: ProducerT,
        topic: str,
        message: PendingMessage,
        keysize: int,
        valsize: int,
    ) -> Any:
        self._child("topic_messages_sent", topic=f"topic.{topic}").inc()
        return Monitor.on_send_initiated(self, producer, topic, message, keysize, valsize)
