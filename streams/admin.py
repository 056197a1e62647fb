"""Topic administration with kafka-python: every topic segstream uses, created idempotently.

Faust creates its own table changelog topics; everything else is declared
here once, with its partition count and configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import TopicAdminError
from streams.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    """A topic's role, name, partition count and configuration."""

    role: str
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic segstream reads or writes, outside Faust's changelogs.

    Input topics share one partition count so that tables keyed by
    ``customer_id`` are co-partitioned with them.
    """
    names = settings.topic_names()
    inputs = settings.input_partitions
    outputs = settings.output_partitions
    return [
        TopicSpec("clickstream", names["clickstream"], inputs),
        TopicSpec("purchases", names["purchases"], inputs),
        TopicSpec("support", names["support"], inputs),
        TopicSpec("erasure_requests", names["erasure_requests"], inputs),
        TopicSpec("segment_changes", names["segment_changes"], outputs),
        TopicSpec("triggers", names["triggers"], outputs),
        TopicSpec("dead_letters", names["dead_letters"], outputs),
        TopicSpec("erasure_audit", names["erasure_audit"], outputs),
        # One partition: one trainer sees every example, in one order.
        TopicSpec("training_examples", names["training_examples"], 1),
        # Compacted, one key: the newest model snapshot survives forever.
        TopicSpec("model_snapshots", names["model_snapshots"], 1, dict(COMPACTED)),
    ]


def admin_client(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client with segstream's connection settings."""
    try:
        return KafkaAdminClient(client_id="segstream-admin", **settings.kafka_python_config())
    except KafkaError as exc:
        raise TopicAdminError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every missing topic; return ``{name: "created" | "exists"}``."""
    specs = topic_specs(settings)
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = "exists"
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            settings.replication_factor,
                            topic_configs=dict(spec.config),
                        )
                    ]
                )
                result[spec.name] = "created"
            except TopicAlreadyExistsError:
                result[spec.name] = "exists"
            except KafkaError as exc:
                raise TopicAdminError(f"creating topic {spec.name} failed: {exc}") from exc
        log.info("topics ready created=%d", sum(v == "created" for v in result.values()))
        return result
    finally:
        admin.close()
