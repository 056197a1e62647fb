"""Read a customer history: the one reader of ``segstream replay`` and ``segstream evaluate``.

Two formats. A ``.csv`` file is a shop's order export, one row per order or
per order line, read through a :class:`CsvLayout` (which column holds what;
the command line's ``--*-col`` flags). Any other file is JSON Lines: one
event per line as it appears on its topic, plus a ``"topic"`` field (the
simulator's format), passed on as it is.

From a CSV, the lines of one order (one order id, consecutive or not) become
one ``purchases`` order event carrying its items, with the amount
Σ quantity × unit price computed exactly and rounded to cents once.
Cancellations (a negative quantity or amount, or an order id with the
cancellation prefix ``C``) become refund events linked to the order they
cancel: ``C489434`` refunds ``489434``. Every event id is derived from the
file (``csv-{order_id}``, ``csv-{order_id}-refund-{line}``), so importing a
file again yields the same ids and the pipeline drops them as duplicates.

A row that cannot be read is skipped and recorded with its line number in
the :class:`ImportReport`, and so is every other row of its order: an order
with an unreadable line has no known total. A file-level problem (a missing
column, a timestamp without offset and no time zone) raises
:class:`HistoryImportError` before anything is produced.

>>> rows = [
...     "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID",
...     "489434,85048,12,12/1/2009 7:45,6.95,13085",
...     "489434,79323P,12,12/1/2009 7:45,6.75,13085",
...     "C489434,85048,-2,12/1/2009 9:10,6.95,13085",
... ]
>>> layout = CsvLayout(order="InvoiceNo", customer="CustomerID", date="InvoiceDate",
...                    qty="Quantity", price="UnitPrice", sku="StockCode",
...                    currency="GBP", timezone="Europe/London")
>>> report = ImportReport()
>>> [(e["type"], e["order_id"], e["amount"], len(e["items"]))
...  for e in csv_events(rows, layout, report)]
[('order', '489434', 164.4, 2), ('refund', '489434', 13.9, 1)]
>>> report.rows, report.orders, report.refunds, report.skipped
(3, 1, 1, [])
"""

from __future__ import annotations

import csv
import functools
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import orjson

from schemas.decode import is_safe_id
from schemas.errors import SegstreamError
from schemas.records import MAX_ID_CHARS, PurchaseEvent

CENT = Decimal("0.01")
# Slash dates are read month first, as in the best-known public retail
# export (``12/1/2010 8:26`` is 1 December); --date-format reads any other.
SLASH_DATE_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")


class HistoryImportError(SegstreamError):
    """A history file that cannot be imported at all (not one bad row)."""


class _MalformedRow(HistoryImportError):
    """One CSV row that cannot be read; the import goes on without its order."""


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How to read an order export: which column holds what.

    Each field but the last four is a column name. The amount of a line is
    ``qty`` × ``price`` (a unit price) or, without a price column, the
    ``amount`` column (the total of that row; rows of one order are added
    up). ``currency`` is one code for the whole file, ``currency_col`` a
    column holding it per row. ``timezone`` (an IANA name) places
    timestamps written without a UTC offset; ``date_format`` is a
    ``strptime`` pattern for dates that are neither ISO-8601 nor
    month/day/year. An order id starting with ``cancel_prefix`` is a
    cancellation (``""`` turns that rule off).
    """

    customer: str = "customer_id"
    date: str = "date"
    order: str | None = None
    qty: str | None = None
    price: str | None = None
    amount: str | None = None
    sku: str | None = None
    currency_col: str | None = None
    currency: str | None = None
    timezone: str | None = None
    date_format: str | None = None
    cancel_prefix: str = "C"

    @property
    def amount_column(self) -> str | None:
        """The row-total column: ``amount`` when named, else ``"amount"`` without a price column."""
        if self.price is not None:
            return None
        return self.amount or "amount"

    def columns(self) -> list[str]:
        """Every column this layout reads."""
        named = [self.customer, self.date, self.order, self.qty, self.price]
        named += [self.amount_column, self.sku, self.currency_col]
        return [name for name in named if name is not None]

    def check(self) -> tzinfo | None:
        """Raise :class:`HistoryImportError` on contradictory options; the time zone."""
        if self.price is not None and self.amount is not None:
            raise HistoryImportError(
                "give --price-col (a unit price, amount = quantity × price) or --amount-col "
                "(a row total), not both"
            )
        if self.currency is not None and self.currency_col is not None:
            raise HistoryImportError("give --currency or --currency-col, not both")
        if self.currency is not None and not _is_currency(self.currency):
            raise HistoryImportError(f"--currency {self.currency!r} is not a 3-letter code")
        if self.timezone is None:
            return None
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise HistoryImportError(
                f"--timezone {self.timezone!r} is not an IANA time zone name "
                "(such as Europe/London or UTC)"
            ) from exc


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A line of the file that produced no event, and why."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What a read made of a file: counts, and every line it skipped."""

    rows: int = 0
    orders: int = 0
    refunds: int = 0
    events: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    def skip(self, lines: Iterable[int], reason: str) -> None:
        """Record that ``lines`` produced no event because of ``reason``."""
        self.skipped.extend(SkippedRow(line, reason) for line in lines)

    def summary(self, show: int = 10) -> str:
        """Counts, then the first ``show`` skipped lines (sorted) with their reasons.

        >>> report = ImportReport(rows=3, orders=1)
        >>> report.skip([3], "quantity 'x' is not a number")
        >>> print(report.summary())
        read 3 rows: 1 order, 0 refunds; skipped 1 row
          line 3: quantity 'x' is not a number
        """
        if self.events:
            made = _count(self.events, "event")
        else:
            made = f"{_count(self.orders, 'order')}, {_count(self.refunds, 'refund')}"
        text = f"read {_count(self.rows, 'row')}: {made}"
        if not self.skipped:
            return text
        lines = sorted(self.skipped, key=lambda row: row.line)
        text += f"; skipped {_count(len(lines), 'row')}"
        text += "".join(f"\n  line {row.line}: {row.reason}" for row in lines[:show])
        if len(lines) > show:
            text += f"\n  … and {len(lines) - show} more"
        return text


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def read_history(
    path: Path, layout: CsvLayout | None, report: ImportReport
) -> Iterator[dict[str, Any]]:
    """The events of a history file, as event lines with their ``"topic"``.

    A CSV is read whole (to gather the lines of each order) and its events
    come in event-time order, ties in the file order of their first line.
    JSON Lines are yielded as read, in file order. ``layout`` applies to a
    CSV only (default: :class:`CsvLayout`'s defaults).

    Raises
    ------
    HistoryImportError
        For a file-level problem, before the first event.
    """
    if path.suffix.lower() == ".csv":
        layout = layout or CsvLayout()
        layout.check()
        return _read_csv_file(path, layout, report)
    if layout is not None:
        raise HistoryImportError(
            f"{path.name} is read as JSON Lines (events with their own fields); the column "
            "flags and --timezone apply to a .csv file only"
        )
    return jsonl_events(path, report)


def _read_csv_file(path: Path, layout: CsvLayout, report: ImportReport) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            events = list(csv_events(handle, layout, report))
        except UnicodeDecodeError as exc:
            raise HistoryImportError(
                f"{path.name} is not UTF-8 text ({exc.reason}); "
                "convert it first (e.g. iconv -f latin1 -t utf-8)"
            ) from exc
    yield from events


def jsonl_events(path: Path, report: ImportReport) -> Iterator[dict[str, Any]]:
    """Event lines of a JSONL file; a line that is not a JSON object is skipped and reported."""
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report.skip([line_no], f"not JSON ({exc})")
                continue
            if not isinstance(event, dict):
                report.skip([line_no], f"a JSON {type(event).__name__}, not an event object")
                continue
            report.events += 1
            yield event


@dataclass(frozen=True, slots=True)
class _Line:
    """One readable row of an order export."""

    line: int
    customer: str
    ts: datetime
    source_id: str | None
    cancel: bool
    qty: int  # positive: a cancellation's sign is in ``cancel``
    amount: Decimal  # positive, exact
    unit_price: Decimal
    sku: str | None
    currency: str


@dataclass
class _Group:
    """The rows that make one event: an order, or the cancellations of one."""

    kind: Literal["order", "refund"]
    lines: list[_Line] = field(default_factory=list)


def csv_events(
    rows: Iterable[str], layout: CsvLayout, report: ImportReport
) -> Iterator[dict[str, Any]]:
    """One ``purchases`` event per order and per cancellation in an order export.

    ``rows`` are the file's lines (header first). Events come in event-time
    order, ties in the file order of their first line; skipped rows go to
    ``report``.
    """
    zone = layout.check()
    reader = csv.DictReader(rows)
    missing = [name for name in layout.columns() if name not in (reader.fieldnames or [])]
    if missing:
        raise HistoryImportError(
            f"the CSV has no column {', '.join(map(repr, missing))} (its columns: "
            f"{', '.join(reader.fieldnames or [])}); name them with the --*-col flags"
        )
    groups: dict[tuple[str, str], _Group] = {}
    broken: dict[str, str] = {}  # order id -> why one of its rows is unreadable
    for row in reader:
        line_no = reader.line_num
        report.rows += 1
        source_id = _text(row, layout.order) if layout.order else None
        try:
            line = _read_line(row, line_no, layout, zone)
        except _MalformedRow as exc:
            report.skip([line_no], str(exc))
            if source_id:
                broken.setdefault(source_id, f"line {line_no} of the order is malformed")
            continue
        groups.setdefault(_group_key(line, layout), _Group(_kind(line))).lines.append(line)
    timed: list[tuple[datetime, dict[str, Any]]] = []
    for group in groups.values():
        reason = broken.get(group.lines[0].source_id or "")
        try:
            if reason is not None:
                raise _MalformedRow(reason)
            timed.append(_event(group, layout))
        except _MalformedRow as exc:
            report.skip((line.line for line in group.lines), f"{_name(group)}: {exc}")
            continue
        if group.kind == "order":
            report.orders += 1
        else:
            report.refunds += 1
    timed.sort(key=lambda pair: pair[0])  # stable: ties keep the file order
    for _, event in timed:
        yield event


def _group_key(line: _Line, layout: CsvLayout) -> tuple[str, str]:
    if line.source_id is None:
        return "row", str(line.line)
    return _kind(line), line.source_id


def _kind(line: _Line) -> Literal["order", "refund"]:
    return "refund" if line.cancel else "order"


def _name(group: _Group) -> str:
    source = group.lines[0].source_id
    noun = "order" if group.kind == "order" else "cancellation"
    return f"{noun} {source}" if source is not None else f"{noun} row"


def _event(group: _Group, layout: CsvLayout) -> tuple[datetime, dict[str, Any]]:
    """The event time and event of one group; :class:`_MalformedRow` when its lines disagree."""
    lines = group.lines
    first = lines[0]
    if len({line.customer for line in lines}) > 1:
        raise _MalformedRow("its lines name different customers")
    if len({line.currency for line in lines}) > 1:
        raise _MalformedRow("its lines are in different currencies")
    amount = sum((line.amount for line in lines), Decimal(0)).quantize(CENT, ROUND_HALF_UP)
    if amount <= 0:
        raise _MalformedRow(f"total is {amount}; an event needs a positive amount")
    ts = min(line.ts for line in lines)
    ts_text = ts.isoformat().replace("+00:00", "Z")
    if first.source_id is None:
        # No order id: the row's content makes a stable one (as it always has).
        digest = hashlib.sha1(  # noqa: S324 - an id, not security
            f"{first.customer}|{ts_text}|{float(amount)}|{first.line}".encode()
        ).hexdigest()[:16]
        order_id = f"csv-{digest}"
    else:
        order_id = _cancelled_order(first.source_id, layout.cancel_prefix)
    event_id = f"csv-{order_id}"
    if group.kind == "refund":
        event_id += f"-refund-{first.line}"
    event: dict[str, Any] = {
        "topic": "purchases",
        "schema_version": 1,
        "event_id": event_id,
        "customer_id": first.customer,
        "ts": ts_text,
        "type": group.kind,
        "order_id": order_id,
        "amount": float(amount),
        "currency": first.currency,
    }
    if layout.sku is not None:
        event["items"] = [
            {"sku": line.sku, "qty": line.qty, "unit_price": float(line.unit_price)}
            for line in lines
        ]
    try:
        msgspec.convert({k: v for k, v in event.items() if k != "topic"}, PurchaseEvent)
    except msgspec.ValidationError as exc:
        raise _MalformedRow(f"not a valid purchase event: {exc}") from exc
    return ts, event


def _cancelled_order(source_id: str, prefix: str) -> str:
    """The order a cancellation id refers to: ``C489434`` → ``489434``; others unchanged."""
    if prefix and source_id.startswith(prefix) and len(source_id) > len(prefix):
        return source_id[len(prefix) :]
    return source_id


def _read_line(
    row: dict[str | Any, Any], line_no: int, layout: CsvLayout, zone: tzinfo | None
) -> _Line:
    if None in row or None in row.values():
        raise _MalformedRow("the row has a different number of fields than the header")
    customer = _id(row, layout.customer, "customer id")
    source_id = _id(row, layout.order, "order id") if layout.order else None
    sku = _id(row, layout.sku, "SKU") if layout.sku else None
    ts = _event_time(_text(row, layout.date), line_no, layout, zone)
    qty = _quantity(_text(row, layout.qty)) if layout.qty else 1
    cancel = qty < 0 or (
        source_id is not None
        and bool(layout.cancel_prefix)
        and source_id.startswith(layout.cancel_prefix)
    )
    qty = abs(qty)
    if layout.price is not None:
        unit_price = _decimal(_text(row, layout.price), "unit price")
        if unit_price < 0:
            raise _MalformedRow(f"unit price {unit_price} is negative")
        amount = qty * unit_price
    else:
        total = _decimal(_text(row, layout.amount_column), "amount")
        cancel = cancel or total < 0
        amount = abs(total)
        unit_price = amount / qty
    return _Line(
        line=line_no,
        customer=customer,
        ts=ts,
        source_id=source_id,
        cancel=cancel,
        qty=qty,
        amount=amount,
        unit_price=unit_price,
        sku=sku,
        currency=_currency(row, layout),
    )


def _text(row: dict[str | Any, Any], column: str | None) -> str:
    value = row.get(column) if column is not None else None
    return "" if value is None else str(value).strip()


def _id(row: dict[str | Any, Any], column: str | None, what: str) -> str:
    text = _text(row, column)
    if not text:
        raise _MalformedRow(f"no {what}")
    if len(text) > MAX_ID_CHARS or not is_safe_id(text):
        raise _MalformedRow(
            f"the {what} is longer than {MAX_ID_CHARS} characters or holds control characters"
        )
    return text


def _decimal(text: str, what: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise _MalformedRow(f"{what} {text!r} is not a number")
    return number


def _quantity(text: str) -> int:
    number = _decimal(text, "quantity")
    if number != number.to_integral_value():
        raise _MalformedRow(f"quantity {text!r} is not a whole number")
    if number == 0:
        raise _MalformedRow("quantity is 0")
    return int(number)


def _currency(row: dict[str | Any, Any], layout: CsvLayout) -> str:
    if layout.currency_col is None:
        return (layout.currency or "EUR").upper()
    code = _text(row, layout.currency_col)
    if not _is_currency(code):
        raise _MalformedRow(f"currency {code!r} is not a 3-letter code")
    return code.upper()


def _is_currency(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isalpha()


def _event_time(text: str, line_no: int, layout: CsvLayout, zone: tzinfo | None) -> datetime:
    """The row's time in UTC; a time without offset is read in ``zone``."""
    parsed = _parse_time(text, layout.date_format)
    if parsed.tzinfo is None:
        if zone is None:
            raise HistoryImportError(
                f"line {line_no}: the date {text!r} has no UTC offset; pass --timezone with "
                "the zone the export was written in (an IANA name such as Europe/London)"
            )
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def _parse_time(text: str, date_format: str | None) -> datetime:
    # Cached: the lines of an order carry the same time, and strptime is slow.
    formats = (date_format,) if date_format else SLASH_DATE_FORMATS
    if date_format is None:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    for pattern in formats:
        try:
            # The zone is settled by the caller: the text's own offset, or --timezone.
            return datetime.strptime(text, pattern)  # noqa: DTZ007
        except ValueError:
            continue
    expected = f"--date-format {date_format}" if date_format else "ISO-8601 or month/day/year"
    raise _MalformedRow(f"date {text!r} is not {expected}")
