"""Ids are safe text: no control or format characters, no surrounding whitespace.

Ids are copied into every output, log line and URL, so the decoder rejects
the ones that would not print as what they are, as ``invalid_value``.
"""

from __future__ import annotations

import json
import logging
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.http_exceptions import LineTooLong
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import DecodeError, DecodeLimits, decode_event, is_safe_id
from streams.app import RequestBytesFilter, http_server_args

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LIMITS = DecodeLimits()

# Compact JSON takes the decoder's fast path; spaced JSON takes the per-field check.
ENCODINGS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "compact": orjson.dumps,
    "spaced": lambda event: json.dumps(event, ensure_ascii=False).encode(),
    "ascii_escaped": lambda event: json.dumps(event, ensure_ascii=True).encode(),
}

BAD_IDS = {
    "nul": "c\x001",
    "newline": "c1\nINFO forged log line",
    "ansi_escape": "\x1b[31mc1",
    "rtl_override": "c\u202e1",
    "zero_width_space": "c\u200b1",
    "leading_space": " c1",
    "trailing_space": "c1 ",
    "tab": "c1\t",
    "delete": "c1\x7f",
    "c1_control": "c1\x85",
    "line_separator": "c\u20281",
    "byte_order_mark": "\ufeffc1",
    "leading_no_break_space": "\u00a0c1",
}
GOOD_IDS = ["c000001", "Zoë-Ångström", "顧客-7", "Ελένη_3", "c 1", "a\u00a0b", "../../x", "x"]


def page_view(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": NOW_MS - 1000,
        "type": "page_view",
        "session_id": "s1",
        **changes,
    }


def order(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": NOW_MS - 1000,
        "type": "order",
        "order_id": "o1",
        "amount": 10.0,
        "items": [{"sku": "s1", "qty": 1, "unit_price": 10.0}],
        **changes,
    }


def kind_of(topic: str, event: dict[str, Any], key: str, encoding: str) -> str | None:
    try:
        decode_event(topic, key.encode(), ENCODINGS[encoding](event), LIMITS, NOW_MS)
    except DecodeError as exc:
        return exc.kind
    return None


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("bad_id", sorted(BAD_IDS))
def test_a_customer_id_with_unsafe_characters_is_an_invalid_value(
    bad_id: str, encoding: str
) -> None:
    customer_id = BAD_IDS[bad_id]
    event = page_view(customer_id=customer_id)
    assert kind_of("clickstream", event, customer_id, encoding) == "invalid_value"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    ("topic", "event"),
    [
        ("clickstream", page_view(event_id="e\n1")),
        ("clickstream", page_view(session_id="s\u202e1")),
        ("clickstream", page_view(product_id="p1 ")),
        ("clickstream", page_view(campaign="\x1b]0;x\x07")),
        ("purchases", order(order_id="o\x001")),
        ("purchases", order(items=[{"sku": "s\u200d1", "qty": 1, "unit_price": 10.0}])),
        (
            "support",
            {
                "event_id": "e1",
                "customer_id": "c1",
                "ts": NOW_MS - 1000,
                "type": "ticket_opened",
                "ticket_id": " t1",
            },
        ),
    ],
)
def test_every_id_field_is_checked(topic: str, event: dict[str, Any], encoding: str) -> None:
    assert kind_of(topic, event, "c1", encoding) == "invalid_value"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_an_anonymous_id_with_a_newline_is_an_invalid_value(encoding: str) -> None:
    event = page_view(customer_id=None, anonymous_id="anon\n7")
    del event["customer_id"]
    assert kind_of("clickstream", event, "anon\n7", encoding) == "invalid_value"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("good_id", GOOD_IDS)
def test_ids_in_any_script_are_accepted(good_id: str, encoding: str) -> None:
    event = page_view(customer_id=good_id, event_id=f"e-{good_id}", session_id=good_id)
    assert kind_of("clickstream", event, good_id, encoding) is None
    assert (
        kind_of("purchases", order(customer_id=good_id, order_id=good_id), good_id, encoding)
        is None
    )


def test_the_rejection_reason_does_not_repeat_the_id() -> None:
    with pytest.raises(DecodeError) as info:
        raw = orjson.dumps(page_view(customer_id="secret\n"))
        decode_event("clickstream", b"secret\n", raw, LIMITS, NOW_MS)
    assert "secret" not in str(info.value)
    assert "customer_id" in info.value.message


def reference_is_safe(text: str) -> bool:
    """The rule spelled out, character by character."""
    return text == text.strip() and all(
        unicodedata.category(char) not in {"Cc", "Cf", "Zl", "Zp"} for char in text
    )


ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40
)


@settings(max_examples=600, deadline=None)
@given(text=ids)
def test_is_safe_id_matches_the_rule_for_any_text(text: str) -> None:
    assert is_safe_id(text) == reference_is_safe(text)


@settings(max_examples=400, deadline=None)
@given(text=ids, encoding=st.sampled_from(sorted(ENCODINGS)))
def test_the_decoder_accepts_an_id_exactly_when_it_is_safe(text: str, encoding: str) -> None:
    kind = kind_of("clickstream", page_view(customer_id=text), text, encoding)
    assert (kind is None) == reference_is_safe(text), (text, kind)
    assert kind in (None, "invalid_value")


def test_every_control_and_format_character_is_refused() -> None:
    for codepoint in range(sys.maxunicode + 1):
        char = chr(codepoint)
        if unicodedata.category(char) in ("Cc", "Cf"):
            assert not is_safe_id(f"c{char}1"), hex(codepoint)


def test_a_refused_http_request_is_logged_without_its_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = http_server_args()["logger"]
    assert any(isinstance(f, RequestBytesFilter) for f in logger.filters)
    line = b"/customers/" + b"q7Z" * 3000 + b"MARKER"
    error = LineTooLong(repr(bytearray(line[:100])), 4096)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        try:
            raise error
        except LineTooLong as exc:
            logger.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "q7Z" not in caplog.text and "customers" not in caplog.text
    assert "status=400 error=LineTooLong" in caplog.text


def test_other_errors_of_the_http_server_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = http_server_args()["logger"]
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("Unhandled exception")
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
