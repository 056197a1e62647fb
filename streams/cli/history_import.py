"""The history-import flags of ``segstream replay`` and ``segstream evaluate``.

Both commands read their file through :func:`schemas.history.read_history`
and declare these same options, so a file that ``evaluate`` reads is the
file ``replay`` sends. After the command's work, :func:`finish_import`
prints what the read made of the file on stderr and exits with
:data:`SKIPPED_ROWS_EXIT_CODE` when rows were skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from schemas.history import CsvLayout, ImportReport

# Work done, but some rows of the file produced no event (1 is an error that
# stopped the command, 2 a usage error).
SKIPPED_ROWS_EXIT_CODE = 3

_PANEL = "History import (CSV)"

OrderCol = Annotated[
    str | None,
    typer.Option(
        help="Order (invoice) id column; the lines of one order become one order event.",
        rich_help_panel=_PANEL,
    ),
]
CustomerCol = Annotated[
    str | None,
    typer.Option(help="Customer id column.", show_default="customer_id", rich_help_panel=_PANEL),
]
DateCol = Annotated[
    str | None,
    typer.Option(help="Order date/time column.", show_default="date", rich_help_panel=_PANEL),
]
QtyCol = Annotated[
    str | None,
    typer.Option(
        help="Quantity column; a negative quantity is a cancellation.",
        show_default="1 per row",
        rich_help_panel=_PANEL,
    ),
]
PriceCol = Annotated[
    str | None,
    typer.Option(
        help="Unit price column: an order's amount is Σ quantity × price.",
        rich_help_panel=_PANEL,
    ),
]
AmountCol = Annotated[
    str | None,
    typer.Option(
        help="Row total column, when there is no price column; the rows of an order are added up.",
        show_default="amount",
        rich_help_panel=_PANEL,
    ),
]
SkuCol = Annotated[
    str | None,
    typer.Option(help="SKU column: the order event lists its items.", rich_help_panel=_PANEL),
]
Currency = Annotated[
    str | None,
    typer.Option(help="Currency code of every amount.", show_default="EUR", rich_help_panel=_PANEL),
]
CurrencyCol = Annotated[
    str | None,
    typer.Option(help="Column holding each row's currency code.", rich_help_panel=_PANEL),
]
Timezone = Annotated[
    str | None,
    typer.Option(
        help="IANA zone (e.g. Europe/London) of dates written without a UTC offset; "
        "required when the file has any.",
        rich_help_panel=_PANEL,
    ),
]
DateFormat = Annotated[
    str | None,
    typer.Option(
        help="strptime pattern of the dates.",
        show_default="ISO-8601, or month/day/year",
        rich_help_panel=_PANEL,
    ),
]
CancelPrefix = Annotated[
    str | None,
    typer.Option(
        help='Order ids starting with this are cancellations; "" turns it off.',
        show_default="C",
        rich_help_panel=_PANEL,
    ),
]
Rejects = Annotated[
    Path | None,
    typer.Option(
        help="Write every skipped line number and its reason here (JSONL).",
        rich_help_panel=_PANEL,
    ),
]


def csv_layout(
    *,
    order_col: str | None,
    customer_col: str | None,
    date_col: str | None,
    qty_col: str | None,
    price_col: str | None,
    amount_col: str | None,
    sku_col: str | None,
    currency: str | None,
    currency_col: str | None,
    timezone: str | None,
    date_format: str | None,
    cancel_prefix: str | None,
) -> CsvLayout | None:
    """The layout the flags describe; ``None`` when no flag was given."""
    flags = [order_col, customer_col, date_col, qty_col, price_col, amount_col, sku_col]
    flags += [currency, currency_col, timezone, date_format, cancel_prefix]
    if all(flag is None for flag in flags):
        return None
    defaults = CsvLayout()
    return CsvLayout(
        customer=customer_col or defaults.customer,
        date=date_col or defaults.date,
        order=order_col,
        qty=qty_col,
        price=price_col,
        amount=amount_col,
        sku=sku_col,
        currency_col=currency_col,
        currency=currency,
        timezone=timezone,
        date_format=date_format,
        cancel_prefix=defaults.cancel_prefix if cancel_prefix is None else cancel_prefix,
    )


def finish_import(report: ImportReport, rejects: Path | None) -> None:
    """Print the read's summary on stderr, write ``rejects``; exit 3 if rows were skipped."""
    err = Console(stderr=True)
    err.print(report.summary(), soft_wrap=True, markup=False, highlight=False)
    if rejects is not None:
        with open(rejects, "wb") as handle:
            for row in sorted(report.skipped, key=lambda row: row.line):
                handle.write(orjson.dumps({"line": row.line, "reason": row.reason}) + b"\n")
        err.print(f"wrote {len(report.skipped)} skipped lines to {rejects}", soft_wrap=True)
    if report.skipped:
        raise typer.Exit(SKIPPED_ROWS_EXIT_CODE)
