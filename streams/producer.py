"""kafka-python clients: send events to the input topics, read the output topics.

Used by the simulator, ``segstream replay``, ``segstream tail``, the demo,
the example notifier and the tests. Each event is keyed by its
``customer_id`` so it lands in the partition that owns the customer's state.
Every client is built here from the settings, security included.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer

from schemas.decode import partition_key
from schemas.event_time import parse_event_time
from streams.settings import Settings


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


def make_consumer(settings: Settings, *topics: str, **overrides: Any) -> KafkaConsumer:
    """A kafka-python consumer of ``topics`` with segstream's connection and security."""
    config: dict[str, Any] = {"auto_offset_reset": "earliest", "enable_auto_commit": False}
    config.update(settings.kafka_python_config())
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def encode_event(event: Mapping[str, Any]) -> tuple[str, bytes | None, bytes]:
    """Split an event line (with its ``"topic"`` role) into ``(role, key, value)``.

    A deliberately malformed record from the simulator (``"malformed"`` set)
    carries its exact bytes in ``raw`` (or ``raw_b64`` when read from a file)
    and its key in ``key``; it is sent as is.
    """
    if "malformed" in event:
        raw = event.get("raw")
        if raw is None:
            raw = base64.b64decode(event["raw_b64"])
        elif isinstance(raw, str):
            raw = raw.encode()
        key = event.get("key")
        return str(event["topic"]), key.encode() if isinstance(key, str) else key, raw
    body = {k: v for k, v in event.items() if k != "topic"}
    role = str(event.get("topic", "clickstream"))
    key = partition_key(body)
    return role, None if key is None else key.encode(), orjson.dumps(body)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Events from a JSONL file in the simulator's format, in file order."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def mark_historical(event: dict[str, Any]) -> dict[str, Any]:
    """The event as part of a backfill (``replay --historical``); malformed ones as they are.

    >>> mark_historical({"topic": "purchases", "event_id": "o1"})["historical"]
    True
    """
    return event if "malformed" in event else {**event, "historical": True}


def in_event_time_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events sorted by event time, stably; malformed records (no event time)
    travel with the event before them."""
    keys: list[int] = []
    last_ts = 0
    for event in events:
        if "malformed" not in event:
            last_ts = parse_event_time(event["ts"])
        keys.append(last_ts)
    order = sorted(range(len(events)), key=keys.__getitem__)
    return [events[i] for i in order]


def send_events(
    settings: Settings,
    events: Iterable[Mapping[str, Any]],
    producer: KafkaProducer | None = None,
    speed: float = 0.0,
) -> Iterator[int]:
    """Send events in order; yields the running count (for progress bars).

    ``speed`` 0 sends as fast as possible; ``k`` > 0 paces sending at k times
    real time, by the events' own event times.
    """
    names = settings.topic_names()
    own = producer is None
    client = make_producer(settings) if producer is None else producer
    try:
        count = 0
        pace = _Pacer(speed) if speed > 0 else None
        for event in events:
            if pace is not None and "ts" in event:
                pace.wait_for(parse_event_time(event["ts"]))
            role, key, value = encode_event(event)
            client.send(names[role], key=key, value=value)
            count += 1
            yield count
        client.flush()
    finally:
        if own:
            client.close()


class _Pacer:
    """Sleeps so that event time advances ``speed`` times faster than wall time."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first_ts: int | None = None
        self.started = time.monotonic()

    def wait_for(self, ts_ms: int) -> None:
        if self.first_ts is None:
            self.first_ts = ts_ms
        due = self.started + (ts_ms - self.first_ts) / 1000 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
