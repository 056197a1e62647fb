"""Currency: the rates file, exact conversion at the event's date, unknown currencies refused."""

from __future__ import annotations

import base64
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.decode import DecodeError, DecodeLimits, dead_letter, decode_event
from schemas.money import (
    FxRates,
    FxRatesError,
    FxRatesFile,
    UnknownCurrencyError,
    load_fx_rates,
    parse_fx_rates,
)
from streams.offline import evaluate
from streams.settings import Settings

DAY_MS = 86_400_000
JAN_1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW_MS = JAN_1 + 40 * DAY_MS
RATES = """date,currency,rate
2026-01-02,JPY,160.00
2026-01-05,JPY,162.47
2026-01-02,USD,1.0412
"""


def purchase(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": JAN_1 + 10 * DAY_MS,
        "type": "order",
        "order_id": "o1",
        "amount": 100.0,
        "currency": "EUR",
    }
    body.update(changes)
    return body


def decode(body: dict[str, Any], limits: DecodeLimits) -> Any:
    return decode_event("purchases", b"c1", orjson.dumps(body), limits, NOW_MS)


def test_the_latest_rate_on_or_before_the_event_date_applies() -> None:
    rates = parse_fx_rates(RATES, "EUR")
    assert rates.rate("JPY", JAN_1 + 1 * DAY_MS) == Decimal("160.00")  # Jan 2, 00:00
    assert rates.rate("JPY", JAN_1 + 4 * DAY_MS - 1) == Decimal("160.00")  # Jan 4, 23:59:59.999
    assert rates.rate("JPY", JAN_1 + 4 * DAY_MS) == Decimal("162.47")  # Jan 5: that day's
    assert rates.rate("JPY", JAN_1 + 300 * DAY_MS) == Decimal("162.47")
    assert rates.rate("EUR", 0) == 1
    with pytest.raises(UnknownCurrencyError, match="on or before 2026-01-01"):
        rates.rate("JPY", JAN_1 + DAY_MS - 1)


def test_conversion_is_decimal_and_rounded_once_to_cents() -> None:
    rates = parse_fx_rates(RATES, "EUR")
    jan_10 = JAN_1 + 9 * DAY_MS
    # 10000 / 162.47 = 61.5498...; 0.1 + 0.2 as floats is 0.30000000000000004.
    assert rates.to_base(10_000.0, "JPY", jan_10) == Decimal("61.55")
    assert rates.to_base(1.0, "USD", jan_10) == Decimal("0.96")  # 0.96043...
    assert rates.to_base(0.1 + 0.2, "EUR", jan_10) == Decimal("0.30")
    assert rates.to_base(2.675, "EUR", jan_10) == Decimal("2.68")  # half up, as written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "fx.csv:1: header must be"),
        ("day,currency,rate\n", "fx.csv:1: header must be"),
        ("date,currency,rate\n2026-01-02,JPY,160\n2026-13-01,JPY,161\n", "fx.csv:3: date must"),
        ("date,currency,rate\n02/01/2026,JPY,160\n", "fx.csv:2: date must be YYYY-MM-DD"),
        ("date,currency,rate\n2026-01-02,JPY,0\n", "fx.csv:2: rate must be a positive number"),
        ("date,currency,rate\n2026-01-02,JPY,-3\n", "fx.csv:2: rate must be a positive number"),
        ("date,currency,rate\n2026-01-02,JPY,NaN\n", "fx.csv:2: rate must be a positive number"),
        ("date,currency,rate\n2026-01-02,JPY,abc\n", "fx.csv:2: rate is not a number"),
        ("date,currency,rate\n2026-01-02,YEN!,160\n", "fx.csv:2: currency must be"),
        ("date,currency,rate\n2026-01-02,JPY\n", "fx.csv:2: expected 3 fields, got 2"),
        (
            "date,currency,rate\n2026-01-02,JPY,160\n\n2026-01-02,jpy,161\n",
            "fx.csv:4: JPY on 2026-01-02 is also on line 2",
        ),
        ("date,currency,rate\n2026-01-02,EUR,1.1\n", "fx.csv:2: the base currency EUR has rate 1"),
    ],
)
def test_a_bad_rates_file_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(FxRatesError) as info:
        parse_fx_rates(text, "EUR", "fx.csv")
    assert message in str(info.value)


def test_a_rates_file_with_a_bom_and_crlf_and_the_base_at_1_is_read(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_bytes(
        b"\xef\xbb\xbfdate,currency,rate\r\n2026-01-02,EUR,1\r\n2026-01-02,JPY,160\r\n"
    )
    rates = load_fx_rates(path, "EUR")
    assert set(rates.days) == {"JPY"}
    with pytest.raises(FxRatesError, match="cannot read"):
        load_fx_rates(tmp_path / "missing.csv", "EUR")


def test_an_unknown_currency_is_a_dead_letter_with_its_reason() -> None:
    body = purchase(currency="chf")
    # Without a rates file only the base currency passes.
    with pytest.raises(DecodeError) as info:
        decode(body, DecodeLimits())
    assert info.value.kind == "unknown_currency"
    assert "CHF" in info.value.message
    # With one, a currency it does not hold is refused all the same.
    with pytest.raises(DecodeError) as info:
        decode(body, DecodeLimits(fx=parse_fx_rates(RATES, "EUR")))
    assert info.value.kind == "unknown_currency"
    letter = dead_letter(
        source_topic="segstream.purchases",
        partition=0,
        offset=3,
        key=b"c1",
        value=orjson.dumps(body),
        error=info.value,
        message_timestamp_ms=None,
        failed_at_ms=NOW_MS,
    )
    assert letter.error_kind == "unknown_currency"
    assert orjson.loads(base64.b64decode(letter.value_b64 or ""))["currency"] == "chf"


def test_the_decoder_sets_the_base_amount_and_keeps_what_was_paid() -> None:
    limits = DecodeLimits(fx=parse_fx_rates(RATES, "EUR"))
    event = decode(purchase(currency="jpy", amount=10_000.0, base_amount=1e6), limits)
    assert (event.amount, event.currency, event.base_amount) == (10_000.0, "JPY", 61.55)
    assert decode(purchase(), limits).base_amount == 100.0
    # The amount bound is in the base currency: 2,000,000 JPY is 12,309.96 EUR.
    assert decode(purchase(currency="JPY", amount=2e6), limits).base_amount == 12_309.96
    strict = DecodeLimits(max_amount=10_000, fx=limits.fx)
    with pytest.raises(DecodeError) as info:
        decode(purchase(currency="JPY", amount=2e6), strict)
    assert info.value.kind == "amount_out_of_range"
    # A float far beyond any price does not break the exact arithmetic.
    with pytest.raises(DecodeError) as info:
        decode(purchase(currency="JPY", amount=1e300), limits)
    assert info.value.kind == "amount_out_of_range"


def test_a_changed_rates_file_is_read_again_and_a_broken_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_text("date,currency,rate\n2026-01-02,JPY,100\n")
    now = [0.0]
    rates = FxRatesFile(path, "EUR", check_s=60, clock=lambda: now[0])
    at = JAN_1 + 9 * DAY_MS

    def rewrite(text: str, mtime_ns: int) -> None:
        path.write_text(text)
        os.utime(path, ns=(mtime_ns, mtime_ns))

    rewrite("date,currency,rate\n2026-01-02,JPY,200\n", 10**18)
    now[0] = 59.0
    assert rates.to_base(1000.0, "JPY", at) == Decimal("10.00")  # not looked at yet
    now[0] = 60.0
    assert rates.to_base(1000.0, "JPY", at) == Decimal("5.00")
    rewrite("date,currency,rate\n2026-01-02,JPY,-1\n", 2 * 10**18)
    now[0] = 200.0
    assert rates.to_base(1000.0, "JPY", at) == Decimal("5.00")  # kept the last good rates
    assert rates.base == "EUR"


def test_settings_load_the_rates_file_and_refuse_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_text(RATES)
    limits = Settings(_env_file=None, fx_rates_file=path, base_currency="EUR").decode_limits()
    assert isinstance(limits.fx, FxRatesFile)
    assert limits.fx.to_base(10_000.0, "JPY", NOW_MS) == Decimal("61.55")
    assert isinstance(Settings(_env_file=None).decode_limits().fx, FxRates)
    path.write_text(RATES + "2026-01-05,JPY,163\n")
    with pytest.raises(FxRatesError, match=r"fx.csv:5: JPY on 2026-01-05 is also on line 3"):
        Settings(_env_file=None, fx_rates_file=path).decode_limits()


def test_revenue_sums_euros_and_yen_in_the_base_currency_exactly(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_text(RATES)
    events = [
        {"topic": "purchases", **purchase(event_id="e1", order_id="o1", amount=100.0)},
        {
            "topic": "purchases",
            **purchase(
                event_id="e2",
                order_id="o2",
                amount=10_000.0,
                currency="JPY",
                ts=JAN_1 + 11 * DAY_MS,
            ),
        },
        # No rate for CHF: refused, counted, never summed.
        {
            "topic": "purchases",
            **purchase(event_id="e3", order_id="o3", currency="CHF", ts=JAN_1 + 12 * DAY_MS),
        },
    ]
    run = evaluate(events, Settings(_env_file=None, fx_rates_file=path))
    assert run.rejected == {"unknown_currency": 1}
    (profile,) = run.summaries()
    expected = Decimal("100") + (Decimal("10000") / Decimal("162.47")).quantize(Decimal("0.01"))
    assert Decimal(str(profile["lifetime"]["revenue"])) == expected == Decimal("161.55")
    aov = profile["lifetime"]["aov"]
    assert aov == pytest.approx(161.55 / 2, abs=0.005)
    assert [
        (o["order_id"], o["amount"], o["original_amount"], o["currency"])
        for o in profile["purchases"]["recent_orders"]
    ] == [("o2", 61.55, 10_000.0, "JPY"), ("o1", 100.0, 100.0, "EUR")]
    # CLV is in euros too: AOV × 2 orders over the 30-day tenure floor, a year × 3 years.
    assert profile["value"]["clv_simple"] == round(aov * (2 / 30 * 365) * 3, 2)
    # Without the rates file the yen order is a dead letter as well.
    run = evaluate(events, Settings(_env_file=None))
    assert run.rejected == {"unknown_currency": 2}
    assert next(run.summaries())["lifetime"]["revenue"] == 100.0
