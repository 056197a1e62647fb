"""Fixtures shared by the real-broker tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.cli.admin import create_topics
from streams.settings import Settings


@pytest.fixture
def settings(
    kafka_bootstrap: str, topic_prefix: str, settings_factory: Callable[..., Settings]
) -> Settings:
    """This test's settings, with the input topics and this app id's changelogs created."""
    made = settings_factory(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    create_topics(made)
    return made
