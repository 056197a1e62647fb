"""Faust tables: per-customer state, partitioned like the input topics.

Keys use the ``raw`` key serializer (the app default), so a key's bytes are
the ``customer_id`` exactly as producers key the input topics: state lands
in the same partition as the events, and web requests are routed to the
worker that owns it. Faust's windowed tables are not used: their
``.current()`` follows broker time and their expiry the wall clock, so
windows are event-time day buckets inside each profile instead
(:mod:`models.profile`).
"""

from __future__ import annotations

from typing import Any

from streams.app import app, settings

# customer_id -> profile state (models.profile)
_options: dict[str, Any] = {
    "default": None,
    "partitions": settings.input_partitions,
    "key_type": str,
    # Compacted within the erasure bound (Settings.changelog_configs).
    "extra_topic_configs": settings.changelog_configs(),
    # Faust's RocksDB defaults allow 3 × 64 MiB of memtables and a 2 GiB
    # block cache for every table partition; bounded here.
    "options": settings.rocksdb_options(),
}

profiles_table = app.Table("profiles", **_options)

# anonymous_id -> {"customer_id": str | None, "pending": [event, ...]}
identities_table = app.Table("identities", **_options)

# "p<partition>" -> population of that input partition (models.pipeline):
# RFM sketches and BG/NBD parameters, moved and recovered with the partition.
population_table = app.Table("population", **_options)


def population_key(partition: int) -> str:
    """The population table key of an input partition."""
    return f"p{partition}"


# customer_id -> [event, ...]: events read ahead of the partition's input
# watermark, applied once it reaches them (models.reorder).
held_table = app.Table("held", **_options)

# "<partition>:<bucket>" -> [[due_ms, customer_id], ...] and "<partition>:from"
# -> oldest bucket: the partition's deadline index (models.deadlines); the
# same keys prefixed "h" index held events by event time.
deadlines_table = app.Table("deadlines", **_options)

# subject hash (streams.agents.subject_hash) -> {"erased_at_ms", "expires_at_ms"}:
# erased ids whose later events are dropped, in the partition of the id.
suppressed_table = app.Table("suppressed", **_options)
