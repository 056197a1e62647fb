"""Topic administration with kafka-python: every topic segstream uses, created idempotently.

Every topic is declared here once, with its partition count and
configuration. Faust creates the table changelog topics itself on a
worker's first start, with :meth:`Settings.changelog_configs`; declaring
them here too lets ``segstream topics create`` bring an existing
deployment's topics to the configured compaction and retention (it sets the
declared configs on topics that already exist).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import TopicAdminError
from streams.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}
# Faust's tables (streams.tables); Faust names a changelog "<app_id>-<table>-changelog".
TABLES = ("profiles", "identities", "population", "held", "deadlines", "suppressed")


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
    # Topics holding plain ids or raw input keep them for a limited time.
    limited = settings.retention_configs()
    return [
        TopicSpec("clickstream", names["clickstream"], inputs),
        TopicSpec("purchases", names["purchases"], inputs),
        TopicSpec("support", names["support"], inputs),
        TopicSpec(
            "erasure_requests", names["erasure_requests"], inputs, limited["erasure_requests"]
        ),
        TopicSpec("segment_changes", names["segment_changes"], outputs, limited["segment_changes"]),
        TopicSpec("triggers", names["triggers"], outputs, limited["triggers"]),
        TopicSpec("dead_letters", names["dead_letters"], outputs, limited["dead_letters"]),
        TopicSpec("erasure_audit", names["erasure_audit"], outputs),
        # One partition: one trainer sees every example, in one order.
        TopicSpec("training_examples", names["training_examples"], 1),
        # Compacted, one key: the newest model snapshot survives forever.
        TopicSpec("model_snapshots", names["model_snapshots"], 1, dict(COMPACTED)),
    ]


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The tables' changelog topics, as Faust declares them (compacted, erasure bound)."""
    return [
        TopicSpec(
            f"{table}_changelog",
            f"{settings.app_id}-{table}-changelog",
            settings.input_partitions,
            settings.changelog_configs(),
        )
        for table in TABLES
    ]


def admin_client(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client with segstream's connection settings."""
    try:
        return KafkaAdminClient(client_id="segstream-admin", **settings.kafka_python_config())
    except KafkaError as exc:
        raise TopicAdminError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every missing topic and set the declared configs of existing ones.

    Returns ``{name: "created" | "exists"}``.
    """
    specs = topic_specs(settings) + changelog_specs(settings)
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
        _set_configs(admin, [s for s in specs if result[s.name] == "exists" and s.config])
        log.info("topics ready created=%d", sum(v == "created" for v in result.values()))
        return result
    finally:
        admin.close()


def _set_configs(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Set the declared configs on existing topics (incrementally: others are kept)."""
    if not specs:
        return
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, spec.name, dict(spec.config)) for spec in specs
    ]
    try:
        # Incremental: only the declared keys change; the topic's other configs stay.
        answers = admin.alter_configs(resources, raise_on_unknown=False, incremental=True).get(
            "topic", {}
        )
    except (KafkaError, ValueError) as exc:
        raise TopicAdminError(f"setting topic configs failed: {exc}") from exc
    failed = {name: answer for name, answer in answers.items() if answer != "OK"}
    if failed:
        raise TopicAdminError(f"setting topic configs failed: {failed}")
