"""Edge decoding: every bad-input kind gets its reason; nothing else escapes."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import (
    DEAD_LETTER_MAX_BYTES,
    DecodeError,
    DecodeLimits,
    dead_letter,
    decode_event,
)
from schemas.records import ClickEvent, DeadLetter, PurchaseEvent

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LIMITS = DecodeLimits()


def order(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e1",
        "customer_id": "c1",
        "ts": "2025-12-31T10:00:00Z",
        "type": "order",
        "order_id": "o1",
        "amount": 30.0,
        "currency": "eur",
        "items": [{"sku": "s1", "category": "books", "qty": 2, "unit_price": 15.0}],
        "discount": 0.0,
        "channel": "web",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def decode(value: bytes, key: bytes | None = b"c1", topic: str = "purchases") -> Any:
    return decode_event(topic, key, value, LIMITS, NOW_MS)


def kind_of(value: bytes, key: bytes | None = b"c1", topic: str = "purchases") -> str:
    with pytest.raises(DecodeError) as info:
        decode(value, key, topic)
    return info.value.kind


def test_valid_order_is_normalised() -> None:
    event = decode(orjson.dumps(order(ts=1_767_175_200_000)))
    assert isinstance(event, PurchaseEvent)
    assert event.currency == "EUR"
    assert event.ts == 1_767_175_200_000
    assert event.items[0].qty == 2


def test_iso_and_epoch_ms_give_the_same_event_time() -> None:
    iso = decode(orjson.dumps(order(ts="2025-12-31T11:00:00+01:00")))
    epoch = decode(orjson.dumps(order(ts=1_767_175_200_000)))
    assert iso.ts == epoch.ts


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (b"{not json", b"c1", "not_json"),
        (b"[1, 2]", b"c1", "not_object"),
        (b"42", b"c1", "not_object"),
        (orjson.dumps(order(customer_id=...)), b"c1", "missing_field"),
        (orjson.dumps(order(ts=...)), b"c1", "missing_field"),
        (orjson.dumps(order(amount="abc")), b"c1", "wrong_type"),
        (orjson.dumps(order(ts=[2026])), b"c1", "wrong_type"),
        (orjson.dumps(order(type="teleport")), b"c1", "unknown_type"),
        (orjson.dumps(order(amount=-5)), b"c1", "amount_out_of_range"),
        (orjson.dumps(order(amount=1e12)), b"c1", "amount_out_of_range"),
        (orjson.dumps(order(ts="2999-01-01T00:00:00Z")), b"c1", "time_out_of_range"),
        (orjson.dumps(order(ts="1985-06-01T00:00:00Z")), b"c1", "time_out_of_range"),
        (orjson.dumps(order(ts="2025-12-31T10:00:00")), b"c1", "invalid_value"),
        (orjson.dumps(order(text="x" * 2_000_000)), b"c1", "oversized"),
        (b'{"customer_id": "\xff\xfe"}', b"c1", "invalid_utf8"),
        (orjson.dumps(order()), None, "missing_key"),
        (orjson.dumps(order()), b"c2", "key_mismatch"),
        (orjson.dumps(order(channel="teleporter")), b"c1", "invalid_value"),
        (orjson.dumps(order(schema_version=2)), b"c1", "unsupported_version"),
        (b"", b"c1", "empty"),
    ],
)
def test_each_bad_input_kind_is_named(value: bytes, key: bytes | None, expected: str) -> None:
    assert kind_of(value, key) == expected


def test_survey_scores_outside_their_scale_are_rejected() -> None:
    nps = {
        "event_id": "e",
        "customer_id": "c1",
        "ts": NOW_MS - 1000,
        "type": "nps_response",
        "score": 11,
    }
    assert kind_of(orjson.dumps(nps), topic="support") == "invalid_value"
    nps["score"] = 9
    assert decode(orjson.dumps(nps), topic="support").score == 9


def test_anonymous_browsing_is_keyed_by_its_anonymous_id() -> None:
    view = {"event_id": "a1", "anonymous_id": "anon-7", "ts": NOW_MS - 1, "type": "page_view"}
    event = decode(orjson.dumps(view), key=b"anon-7", topic="clickstream")
    assert isinstance(event, ClickEvent)
    assert event.customer_id is None
    assert kind_of(orjson.dumps(view), key=b"c1", topic="clickstream") == "key_mismatch"
    nobody = {"event_id": "a1", "ts": NOW_MS - 1, "type": "page_view"}
    assert kind_of(orjson.dumps(nobody), key=b"x", topic="clickstream") == "missing_field"


def test_dead_letter_keeps_original_bytes_and_reason() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"{oops", b"c1")
    record = dead_letter(
        source_topic="segstream.purchases",
        partition=3,
        offset=17,
        key=b"c1",
        value=b"{oops",
        error=info.value,
        message_timestamp_ms=5,
        failed_at_ms=6,
    )
    assert record.error_kind == "not_json"
    assert (record.source_topic, record.partition, record.offset) == ("segstream.purchases", 3, 17)
    assert base64.b64decode(record.value_b64 or "") == b"{oops"
    assert base64.b64decode(record.key_b64 or "") == b"c1"
    assert (record.key_size_bytes, record.value_size_bytes, record.truncated) == (2, 5, False)
    assert record.value_sha256 == hashlib.sha256(b"{oops").hexdigest()
    assert record.key_sha256 == hashlib.sha256(b"c1").hexdigest()


def oversized_letter(key: bytes, value: bytes, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> bytes:
    with pytest.raises(DecodeError) as info:
        decode(value, key, topic="clickstream")
    record = dead_letter(
        source_topic="segstream.clickstream",
        partition=0,
        offset=1,
        key=key,
        value=value,
        error=info.value,
        message_timestamp_ms=None,
        failed_at_ms=2,
        max_bytes=max_bytes,
    )
    return msgspec.json.encode(record)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"c1", b'{"event_id":"' + b"x" * 800_000 + b'"}'),  # an 800 KB value
        (b"k" * 500_000, b'{"event_id":"e1","customer_id":"c1"}'),  # a 500 KB key
        (b"k" * 990_000, b"v" * 990_000),  # both close to the broker's limit
    ],
    ids=["800_kb_value", "500_kb_key", "huge_key_and_value"],
)
def test_a_dead_letter_keeps_a_bounded_prefix_with_full_sizes_and_digests(
    key: bytes, value: bytes
) -> None:
    encoded = oversized_letter(key, value)
    # base64 of two 64 KiB prefixes plus the fields: far below a 1 MB request.
    assert len(encoded) < 180_000
    letter = msgspec.json.decode(encoded, type=DeadLetter)
    kept_key = base64.b64decode(letter.key_b64 or "")
    kept_value = base64.b64decode(letter.value_b64 or "")
    assert kept_key == key[:DEAD_LETTER_MAX_BYTES]
    assert kept_value == value[:DEAD_LETTER_MAX_BYTES]
    assert (letter.key_size_bytes, letter.value_size_bytes) == (len(key), len(value))
    assert letter.key_sha256 == hashlib.sha256(key).hexdigest()
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.truncated


def test_a_dead_letter_may_keep_no_bytes_at_all() -> None:
    letter = msgspec.json.decode(oversized_letter(b"c1", b"[" * 70_000, 0), type=DeadLetter)
    assert (letter.key_b64, letter.value_b64) == ("", "")
    assert (letter.key_size_bytes, letter.value_size_bytes) == (2, 70_000)
    assert letter.value_sha256 == hashlib.sha256(b"[" * 70_000).hexdigest()


def test_a_dead_letter_written_before_sizes_and_digests_still_reads() -> None:
    old = (
        b'{"source_topic":"segstream.purchases","partition":0,"offset":1,"key_b64":"YzE=",'
        b'"value_b64":"e29vcHM=","error_kind":"not_json","error":"x",'
        b'"message_timestamp_ms":null,"failed_at_ms":2,"schema_version":1}'
    )
    letter = msgspec.json.decode(old, type=DeadLetter)
    assert letter.value_b64 == "e29vcHM=" and letter.value_sha256 is None and not letter.truncated


@settings(max_examples=400, deadline=None)
@given(value=st.binary(max_size=300), key=st.one_of(st.none(), st.binary(max_size=20)))
def test_arbitrary_bytes_never_escape_as_anything_but_decode_error(
    value: bytes, key: bytes | None
) -> None:
    for topic in ("clickstream", "purchases", "support"):
        try:
            decode_event(topic, key, value, LIMITS, NOW_MS)
        except DecodeError:
            pass


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "event_id",
        "customer_id",
        "ts",
        "type",
        "order_id",
        "amount",
        "currency",
        "items",
        "discount",
        "channel",
        "score",
        "anonymous_id",
        "duration_ms",
        "schema_version",
    ]
)


@settings(max_examples=400, deadline=None)
@given(payload=st.dictionaries(field_names, json_values, max_size=10))
def test_arbitrary_json_objects_decode_or_fail_with_a_kind(payload: dict[str, Any]) -> None:
    raw = orjson.dumps(payload)
    for topic in ("clickstream", "purchases", "support"):
        try:
            event = decode_event(topic, b"c1", raw, LIMITS, NOW_MS)
        except DecodeError as exc:
            assert exc.kind
        else:
            assert isinstance(event.ts, int)


def test_decoding_uses_the_wall_clock_only_for_the_future_bound() -> None:
    recent = orjson.dumps(order(ts=int(time.time() * 1000)))
    assert decode_event("purchases", b"c1", recent, LIMITS, int(time.time() * 1000)).amount == 30
