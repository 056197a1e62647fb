"""Faust tables: per-customer state, partitioned like the input topics.

Keys are the raw ``customer_id`` bytes' string form with the ``raw`` key
serializer, so a key lands in the same partition as the input message that
carried it and web requests are routed to the worker that owns it.
"""

from __future__ import annotations

from streams.app import app, settings

profiles_table = app.Table(
    "profiles",
    default=None,
    partitions=settings.input_partitions,
    key_type=str,
)
