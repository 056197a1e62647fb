"""Turn a plain transactions CSV into ``purchases`` order events.

A shop backfilling its order history usually has one row per order (or per
order line): customer id, date, amount, maybe an order id and a quantity.
Column names differ from shop to shop, so they are parameters.

>>> rows = ["cust,day,total", "c1,2025-03-01,19.90", "c1,2025-03-09,5.00"]
>>> [e["ts"] for e in csv_orders(rows, CsvColumns("cust", "day", "total"))]
['2025-03-01T00:00:00Z', '2025-03-09T00:00:00Z']
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from schemas.errors import SegstreamError


class CsvImportError(SegstreamError):
    """A transactions CSV that cannot be read (missing columns, bad row)."""


@dataclass(frozen=True, slots=True)
class CsvColumns:
    """Which CSV column holds which field."""

    customer_id: str = "customer_id"
    date: str = "date"
    amount: str = "amount"
    order_id: str | None = None
    quantity: str | None = None
    currency: str = "EUR"


def _event_time(text: str) -> str:
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return (
                datetime(day.year, day.month, day.day, tzinfo=UTC)
                .isoformat()
                .replace("+00:00", "Z")
            )
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CsvImportError(f"cannot read date {text!r}") from exc
    # A timestamp without an offset in an order export is taken as UTC.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def csv_orders(lines: Iterable[str], columns: CsvColumns) -> Iterator[dict[str, Any]]:
    """Yield one ``purchases`` order event (with ``"topic"``) per CSV row."""
    reader = csv.DictReader(lines)
    needed = [columns.customer_id, columns.date, columns.amount]
    needed += [c for c in (columns.order_id, columns.quantity) if c]
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise CsvImportError(f"CSV has no column(s) {missing}; map them with the --*-col flags")
    for line_no, row in enumerate(reader, start=2):
        customer = row[columns.customer_id].strip()
        try:
            amount = round(float(row[columns.amount]), 2)
            qty = int(row[columns.quantity]) if columns.quantity else 1
        except ValueError as exc:
            raise CsvImportError(f"line {line_no}: {exc}") from exc
        ts = _event_time(row[columns.date])
        order_id = row[columns.order_id].strip() if columns.order_id else ""
        # Without an order id, the row's content makes a stable id, so a
        # second backfill of the same file is dropped as duplicates.
        digest = hashlib.sha1(  # noqa: S324 - an id, not security
            f"{customer}|{ts}|{amount}|{line_no}".encode()
        ).hexdigest()[:16]
        order_id = order_id or f"csv-{digest}"
        yield {
            "topic": "purchases",
            "schema_version": 1,
            "event_id": f"csv-{order_id}",
            "customer_id": customer,
            "ts": ts,
            "type": "order",
            "order_id": order_id,
            "amount": amount,
            "currency": columns.currency,
            "items": [{"sku": "unknown", "qty": qty, "unit_price": round(amount / qty, 2)}],
            "discount": 0.0,
            "channel": "web",
        }
