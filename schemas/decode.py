"""Edge decoding: raw Kafka bytes → a typed, normalised record, or a reason.

Faust acknowledges a message it cannot deserialize before the agent sees it,
so segstream reads raw bytes and decodes here. :func:`decode_event` either
returns a record or raises :class:`DecodeError` carrying a machine-readable
``kind``; the agent turns that into a dead letter. Nothing here raises
anything else, whatever the input (a hypothesis test fuzzes it).

JSON is parsed with orjson; validation and normalisation use msgspec Structs
(``schemas.records``), which check a parsed dict against the contract in
about a microsecond and also generate the published JSON Schemas.

>>> limits = DecodeLimits()
>>> event = decode_event(
...     "purchases", b"c1",
...     b'{"event_id":"e1","customer_id":"c1","ts":"2026-01-01T00:00:00Z",'
...     b'"type":"order","order_id":"o1","amount":12.5,"currency":"eur"}',
...     limits, now_ms=1_767_225_600_000)
>>> event.currency, event.ts
('EUR', 1767225600000)
>>> decode_event("purchases", b"c1", b"[1]", limits, now_ms=0)
Traceback (most recent call last):
...
schemas.decode.DecodeError: not_object: JSON value is a list, not an object
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, get_type_hints

import msgspec
import orjson
from msgspec.structs import force_setattr

from schemas.errors import SegstreamError
from schemas.money import Converter, FxRates, UnknownCurrencyError
from schemas.records import (
    INPUT_MODELS,
    SCORE_RANGES,
    ClickEvent,
    DeadLetter,
    Id,
    InputEvent,
    LineItem,
    PurchaseEvent,
    SupportEvent,
)

ErrorKind = Literal[
    "oversized",
    "empty",
    "invalid_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "invalid_value",
    "amount_out_of_range",
    "time_out_of_range",
    "missing_key",
    "key_mismatch",
    "unsupported_version",
    "unknown_topic",
    "unknown_currency",
]

# 1990-01-01T00:00:00Z: nothing in a customer history is older.
MIN_EVENT_TIME_MS = 631_152_000_000
# Bytes of a rejected key and value a dead letter keeps: base64 of both, and
# the key again as the message key, stay far below a 1 MB producer request.
DEAD_LETTER_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds an input event must respect, and the rates money is converted with; all settings.

    ``max_amount`` bounds the amount in the base currency. ``fx`` converts
    purchase amounts to the base currency; the default knows only EUR.
    """

    max_bytes: int = 64 * 1024
    max_amount: float = 1_000_000.0
    min_ts_ms: int = MIN_EVENT_TIME_MS
    max_future_ms: int = 24 * 3600 * 1000
    fx: Converter = field(default_factory=FxRates)


class DecodeError(SegstreamError):
    """An input message that cannot be accepted, and why."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.message = message


def decode_event(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    limits: DecodeLimits,
    now_ms: int,
) -> InputEvent:
    """Decode, validate and normalise one input message.

    Parameters
    ----------
    topic
        The role of the source topic: ``clickstream``, ``purchases`` or ``support``.
    key, value
        The raw message key and value.
    limits
        Size, amount and time bounds.
    now_ms
        Wall-clock time, only to reject events from the future.

    Raises
    ------
    DecodeError
        With ``kind`` naming the first problem found.
    """
    model = INPUT_MODELS.get(topic)
    if model is None:
        raise DecodeError("unknown_topic", f"no contract for topic role {topic!r}")
    if not value:
        raise DecodeError("empty", "message has no value")
    if len(value) > limits.max_bytes:
        raise DecodeError("oversized", f"{len(value)} bytes > limit {limits.max_bytes}")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "utf-8" in str(exc):
            raise DecodeError("invalid_utf8", "value is not valid UTF-8") from exc
        raise DecodeError("not_json", f"value is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise DecodeError("not_object", f"JSON value is a {type(payload).__name__}, not an object")
    version = payload.get("schema_version", 1)
    if version != 1:
        raise DecodeError("unsupported_version", f"schema_version {version!r} is not supported")
    try:
        event: InputEvent = msgspec.convert(payload, model)
    except msgspec.ValidationError as exc:
        raise _from_validation(str(exc)) from exc
    if _may_hold_unsafe_text(value):
        _check_ids(event)
    _check_bounds(event, limits, now_ms)
    if isinstance(event, PurchaseEvent):
        _convert_amount(event, limits)
    _check_key(event, key)
    return event


# Control (Cc) and format (Cf) characters: NUL, newlines, ANSI escapes, bidi
# overrides, zero-width characters. Line and paragraph separators (Zl, Zp)
# too: they break a log line or a CSV row as a newline does.
UNSAFE_ID_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def is_safe_id(text: str) -> bool:
    """Whether an id is safe text: no control or format character, no surrounding whitespace.

    Ids are copied into every output, log line and URL; they must print as
    what they are.

    >>> is_safe_id("c000001"), is_safe_id("Zoë Ångström-42"), is_safe_id("顧客-7")
    (True, True, True)
    >>> is_safe_id("c1\\n"), is_safe_id("c\\u202e1"), is_safe_id("c\\u200b1"), is_safe_id(" c1")
    (False, False, False, False)
    """
    if text.isprintable():
        # Printable text holds no Cc, Cf, Zl or Zp and no whitespace but the
        # ASCII space: the common case costs one pass in C.
        return text[:1] != " " and text[-1:] != " "
    return text == text.strip() and not any(
        unicodedata.category(char) in UNSAFE_ID_CATEGORIES for char in text
    )


def _id_fields(model: type) -> tuple[str, ...]:
    hints = get_type_hints(model, include_extras=True)
    return tuple(name for name, hint in hints.items() if hint in (Id, Id | None))


# The fields of each record typed ``Id``: every one of them is checked.
_ID_FIELDS: dict[type, tuple[str, ...]] = {
    model: _id_fields(model) for model in (*INPUT_MODELS.values(), LineItem)
}


# Printable ASCII but the space and the backslash. JSON forbids raw control
# characters inside strings, so in a message made only of these bytes no
# string can hold an unsafe character (an escape needs the backslash, Cf and
# C1 characters are not ASCII) or whitespace.
_PLAIN_JSON_BYTES = bytes(byte for byte in range(0x21, 0x7F) if byte != ord("\\"))


def _may_hold_unsafe_text(value: bytes) -> bool:
    # Compact producers send plain messages: one pass in C (about a tenth of
    # a decode) instead of a Python check of every id field (about a third).
    return bool(value.translate(None, _PLAIN_JSON_BYTES))


def _check_ids(event: InputEvent) -> None:
    records: list[Any] = [event]
    if isinstance(event, PurchaseEvent):
        records.extend(event.items)
    for record in records:
        for name in _ID_FIELDS[type(record)]:
            text = getattr(record, name)
            if text is not None and not is_safe_id(text):
                raise DecodeError(
                    "invalid_value",
                    f"{name} holds a control or format character or surrounding whitespace",
                )


def _from_validation(message: str) -> DecodeError:
    kind: ErrorKind
    if message.startswith("Object missing required field"):
        kind = "missing_field"
    elif message.startswith("Invalid enum value") and message.endswith("`$.type`"):
        kind = "unknown_type"
    elif message.startswith("Expected `float` >") and "$.amount" in message:
        kind = "amount_out_of_range"
    elif message.startswith("Expected `") and "`, got `" in message:
        kind = "wrong_type"
    else:
        kind = "invalid_value"
    return DecodeError(kind, message)


def _check_bounds(event: InputEvent, limits: DecodeLimits, now_ms: int) -> None:
    ts = int(event.ts)  # normalised to epoch ms by the record
    if ts < limits.min_ts_ms:
        raise DecodeError("time_out_of_range", "event time is before 1990")
    if ts > now_ms + limits.max_future_ms:
        raise DecodeError("time_out_of_range", "event time is too far in the future")
    if isinstance(event, SupportEvent) and event.type in SCORE_RANGES:
        low, high = SCORE_RANGES[event.type]
        if event.score is None or not low <= event.score <= high:
            raise DecodeError(
                "invalid_value", f"score of {event.type} must be within {low}..{high}"
            )


def _convert_amount(event: PurchaseEvent, limits: DecodeLimits) -> None:
    # The base amount is what every revenue figure sums; a currency without a
    # rate is refused here, so it reaches the dead letters, never a sum.
    try:
        base_amount = limits.fx.to_base(event.amount, event.currency, int(event.ts))
    except UnknownCurrencyError as exc:
        raise DecodeError("unknown_currency", str(exc)) from exc
    if base_amount > Decimal(str(limits.max_amount)):
        raise DecodeError(
            "amount_out_of_range",
            f"amount {base_amount} {limits.fx.base} exceeds limit {limits.max_amount}",
        )
    force_setattr(event, "base_amount", float(base_amount))


def expected_key(customer_id: str | None, anonymous_id: str | None, type_: str) -> str | None:
    """The message key an event must carry: whose state it updates.

    The customer id; for logged-out browsing, and the ``identify`` that ends
    it, the anonymous id (``streams.agents`` stitches those to the customer).
    The key decides the partition and so which worker holds the state.
    """
    if anonymous_id is not None and (customer_id is None or type_ == "identify"):
        return anonymous_id
    return customer_id


def partition_key(event: Mapping[str, Any]) -> str | None:
    """:func:`expected_key` of an event mapping; producers key messages with it.

    >>> partition_key({"customer_id": "c000001", "type": "page_view"})
    'c000001'
    >>> partition_key({"anonymous_id": "a1", "customer_id": "c000001", "type": "identify"})
    'a1'
    """
    customer_id = event.get("customer_id")
    anonymous_id = event.get("anonymous_id")
    return expected_key(
        None if customer_id is None else str(customer_id),
        None if anonymous_id is None else str(anonymous_id),
        str(event.get("type", "")),
    )


def _check_key(event: InputEvent, key: bytes | None) -> None:
    anonymous_id = event.anonymous_id if isinstance(event, ClickEvent) else None
    expected = expected_key(event.customer_id, anonymous_id, event.type)
    if expected is None:
        raise DecodeError("missing_field", "customer_id: required (or anonymous_id)")
    if key is None:
        raise DecodeError("missing_key", "message has no key; key it by customer_id")
    if key != expected.encode():
        raise DecodeError("key_mismatch", "message key differs from the event's customer_id")


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: DecodeError,
    message_timestamp_ms: int | None,
    failed_at_ms: int,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> DeadLetter:
    """The dead-letter record for a rejected message: its bytes, where from and why.

    At most ``max_bytes`` of the key and of the value are kept, so the record
    fits in one producer request however large the original was; the full
    sizes and SHA-256 digests still identify the originals.

    >>> error = DecodeError("oversized", "800000 bytes > limit 65536")
    >>> letter = dead_letter(source_topic="segstream.clickstream", partition=0, offset=7,
    ...     key=b"c1", value=b"x" * 800_000, error=error, message_timestamp_ms=None,
    ...     failed_at_ms=0, max_bytes=4)
    >>> letter.value_b64, letter.value_size_bytes, letter.truncated, letter.key_b64
    ('eHh4eA==', 800000, True, 'YzE=')
    """
    truncated = any(part is not None and len(part) > max_bytes for part in (key, value))
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key_b64=_b64_prefix(key, max_bytes),
        value_b64=_b64_prefix(value, max_bytes),
        error_kind=error.kind,
        error=error.message,
        message_timestamp_ms=message_timestamp_ms,
        failed_at_ms=failed_at_ms,
        key_size_bytes=None if key is None else len(key),
        value_size_bytes=None if value is None else len(value),
        key_sha256=None if key is None else hashlib.sha256(key).hexdigest(),
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        truncated=truncated,
    )


def _b64_prefix(data: bytes | None, max_bytes: int) -> str | None:
    return None if data is None else base64.b64encode(data[:max_bytes]).decode()
