"""Faust tables: per-customer state, partitioned like the input topics.

Keys use the ``raw`` key serializer (the app default), so a key's bytes are
the ``customer_id`` exactly as producers key the input topics: state lands
in the same partition as the events, and web requests are routed to the
worker that owns it.
"""

from __future__ import annotations

from streams.app import app, settings

profiles_table = app.Table(
    "profiles",
    default=None,
    partitions=settings.input_partitions,
    key_type=str,
)

# anonymous_id -> {"customer_id": str | None, "pending": [event, ...]}
identities_table = app.Table(
    "identities",
    default=None,
    partitions=settings.input_partitions,
    key_type=str,
)
