"""Send events to segstream's input topics with kafka-python.

Used by the simulator, ``segstream replay``, the demo and the tests. Each
event is keyed by its ``customer_id`` so it lands in the partition that owns
the customer's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson
from kafka import KafkaProducer

from streams.settings import Settings

INPUT_ROLES = ("clickstream", "purchases", "support", "erasure_requests")


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A kafka-python producer with segstream's connection and security settings."""
    config: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": None,
    }
    config.update(settings.kafka_python_config())
    config.update(overrides)
    return KafkaProducer(**config)


def encode_event(event: Mapping[str, Any]) -> tuple[str, bytes | None, bytes]:
    """Split an event line (with its ``"topic"`` role) into ``(role, key, value)``."""
    body = {k: v for k, v in event.items() if k != "topic"}
    role = str(event.get("topic", "clickstream"))
    customer_id = body.get("customer_id")
    key = str(customer_id).encode() if customer_id is not None else None
    return role, key, orjson.dumps(body)


def send_events(
    settings: Settings,
    events: Iterable[Mapping[str, Any]],
    producer: KafkaProducer | None = None,
) -> Iterator[int]:
    """Send events in order; yields the running count (for progress bars)."""
    names = settings.topic_names()
    own = producer is None
    client = make_producer(settings) if producer is None else producer
    try:
        count = 0
        for event in events:
            role, key, value = encode_event(event)
            client.send(names[role], key=key, value=value)
            count += 1
            yield count
        client.flush()
    finally:
        if own:
            client.close()
