"""Prometheus metrics of a worker (prometheus-client), served at ``/metrics``.

Labels carry topics, event types and reasons — never customer ids or other
personal data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

registry = CollectorRegistry()

events_consumed = Counter(
    "segstream_events_consumed",
    "Input events accepted, by topic role and event type.",
    ["topic", "type"],
    registry=registry,
)
decode_failures = Counter(
    "segstream_decode_failures",
    "Input messages rejected at decoding, by topic role and reason.",
    ["topic", "reason"],
    registry=registry,
)
dead_letters = Counter(
    "segstream_dead_letters",
    "Records written to the dead-letter topic.",
    ["topic"],
    registry=registry,
)
duplicate_events = Counter(
    "segstream_duplicate_events",
    "Redelivered events (same event_id) that changed nothing.",
    ["topic"],
    registry=registry,
)
late_events = Counter(
    "segstream_late_events",
    "Events whose daily window had closed; counted in lifetime totals only.",
    ["topic"],
    registry=registry,
)
anonymous_events = Counter(
    "segstream_anonymous_events",
    "Anonymous clickstream events, by what happened to them.",
    ["outcome"],
    registry=registry,
)
erasures = Counter(
    "segstream_erasures",
    "Erasure requests carried out, by subject kind.",
    ["subject"],
    registry=registry,
)
