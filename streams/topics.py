"""Faust topic objects; names come from :meth:`Settings.topic_names` only.

Input topics are read as raw bytes: decoding is ours (``schemas.decode``), so
a malformed message becomes a dead letter instead of an agent crash. The
three touchpoint topics are consumed by one agent as one stream, so a
customer's clicks, orders and tickets are folded into state together.
"""

from __future__ import annotations

from typing import Any

from streams.app import app, settings

topic_names = settings.topic_names()
INPUT_ROLES = ("clickstream", "purchases", "support")
ROLE_BY_TOPIC = {topic_names[role]: role for role in INPUT_ROLES}


def _raw_topic(*names: str, partitions: int) -> Any:
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


touchpoints_topic = _raw_topic(
    *(topic_names[role] for role in INPUT_ROLES), partitions=settings.input_partitions
)
clickstream_topic = _raw_topic(topic_names["clickstream"], partitions=settings.input_partitions)
erasure_requests_topic = _raw_topic(
    topic_names["erasure_requests"], partitions=settings.input_partitions
)
segment_changes_topic = _raw_topic(
    topic_names["segment_changes"], partitions=settings.output_partitions
)
triggers_topic = _raw_topic(topic_names["triggers"], partitions=settings.output_partitions)
dead_letters_topic = _raw_topic(topic_names["dead_letters"], partitions=settings.output_partitions)
erasure_audit_topic = _raw_topic(
    topic_names["erasure_audit"], partitions=settings.output_partitions
)
training_examples_topic = _raw_topic(topic_names["training_examples"], partitions=1)
model_snapshots_topic = _raw_topic(topic_names["model_snapshots"], partitions=1)
