"""Faust topic objects; names come from :meth:`Settings.topic_names` only.

Input topics are read as raw bytes: decoding is ours (``schemas.decode``), so
a malformed message becomes a dead letter instead of an agent crash.
"""

from __future__ import annotations

from streams.app import app, settings

_names = settings.topic_names()


def _raw_topic(role: str, partitions: int) -> object:
    return app.topic(
        _names[role],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


clickstream_topic = _raw_topic("clickstream", settings.input_partitions)
purchases_topic = _raw_topic("purchases", settings.input_partitions)
support_topic = _raw_topic("support", settings.input_partitions)
erasure_requests_topic = _raw_topic("erasure_requests", settings.input_partitions)
segment_changes_topic = _raw_topic("segment_changes", settings.output_partitions)
triggers_topic = _raw_topic("triggers", settings.output_partitions)
dead_letters_topic = _raw_topic("dead_letters", settings.output_partitions)
