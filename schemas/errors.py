"""The one exception hierarchy of segstream.

Everything segstream raises on purpose derives from :class:`SegstreamError`;
third-party errors are wrapped with ``raise ... from exc``. It lives in
``schemas`` because that is the package every other one may import.
"""

from __future__ import annotations


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """A setting is missing or inconsistent."""


class LocalKafkaError(SegstreamError):
    """The local development broker could not be fetched, started or stopped."""


class TopicAdminError(SegstreamError):
    """Creating or describing topics failed."""
