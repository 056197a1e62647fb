"""Event time: timestamps come from the payload, normalised to UTC epoch ms.

>>> parse_event_time("2026-01-01T00:00:00Z")
1767225600000
>>> parse_event_time("2026-01-01T01:00:00+01:00")
1767225600000
>>> parse_event_time(1767225600000)
1767225600000
"""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.errors import SegstreamError


class EventTimeError(SegstreamError, ValueError):
    """A timestamp that is not ISO-8601 with a zone, nor epoch milliseconds."""


def parse_event_time(value: object) -> int:
    """Epoch milliseconds (UTC) from an ISO-8601 string or an epoch-ms number.

    ISO strings without a UTC offset are rejected rather than guessed.
    """
    if isinstance(value, bool):
        raise EventTimeError("timestamp must be ISO-8601 or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise EventTimeError(f"not an ISO-8601 timestamp: {value[:40]!r}") from exc
        if parsed.tzinfo is None:
            raise EventTimeError("ISO-8601 timestamp has no UTC offset")
        return int(parsed.timestamp() * 1000)
    raise EventTimeError(f"timestamp has type {type(value).__name__}")


def to_iso(ts_ms: int) -> str:
    """ISO-8601 UTC text for epoch milliseconds."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
