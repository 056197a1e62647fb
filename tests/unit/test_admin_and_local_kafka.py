"""Topic declarations and the local broker starter, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import LocalKafkaError
from streams import local_kafka
from streams.admin import topic_specs
from streams.settings import Settings


def test_every_topic_name_is_declared_once_with_the_configured_partitions() -> None:
    settings = Settings(_env_file=None, input_partitions=6, output_partitions=3)
    specs = topic_specs(settings)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    assert set(names) == set(settings.topic_names().values())
    by_role = {spec.role: spec for spec in specs}
    for role in ("clickstream", "purchases", "support", "erasure_requests"):
        assert by_role[role].partitions == 6
    assert by_role["segment_changes"].partitions == 3


def test_topic_prefix_applies_to_every_topic() -> None:
    settings = Settings(_env_file=None, topic_prefix="shop1.")
    assert all(name.startswith("shop1.") for name in settings.topic_names().values())


def test_missing_java_is_reported_in_a_plain_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: None)
    with pytest.raises(LocalKafkaError, match=r"Java was not found.*docker compose"):
        local_kafka.check_tools()


def test_missing_maven_is_reported_when_jars_are_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(local_kafka, "check_tools", lambda: None)
    monkeypatch.setattr(local_kafka.shutil, "which", lambda name: None)
    with pytest.raises(LocalKafkaError, match=r"Maven .*docker compose"):
        local_kafka.ensure_jars()


def test_pinned_kafka_is_a_4x_release() -> None:
    assert local_kafka.kafka_version().startswith("4.")


def test_server_properties_template_fills_every_placeholder(tmp_path: Path) -> None:
    text = local_kafka.TEMPLATE.read_text().format(
        broker_port=1, controller_port=2, data_dir=tmp_path
    )
    assert "{" not in text
    assert "transaction.state.log.min.isr=1" in text
    assert "group.initial.rebalance.delay.ms=0" in text
