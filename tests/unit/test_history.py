"""History import: one reader of JSONL and order-export CSVs for `replay` and `evaluate`."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from schemas.decode import DecodeLimits, decode_event
from schemas.history import CsvLayout, HistoryImportError, ImportReport, csv_events, read_history
from schemas.records import PurchaseEvent
from streams.cli import commands
from streams.cli.commands import cli
from streams.cli.history_import import SKIPPED_ROWS_EXIT_CODE
from streams.producer import encode_event, in_event_time_order

# The layout of the best-known public online-retail export: one row per order
# line, local UK times without an offset, cancellations as a `C` invoice with
# negative quantities. Invoice 489434's lines are not consecutive (line 5).
RETAIL_CSV = """\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,12/1/2010 8:26,6.95,13085,United Kingdom
489434,79323P,PINK CHERRY LIGHTS,12,12/1/2010 8:26,6.75,13085,United Kingdom
489435,22350,"CAT BOWL, SMALL",12,12/1/2010 8:28,2.55,13085,United Kingdom
489434,21232,STRAWBERRY CERAMIC TRINKET BOX,48,12/1/2010 8:26,2.10,13085,United Kingdom
489436,22111,SCOTTIE DOG HOT WATER BOTTLE,3,12/1/2010 9:06,4.95,13078,United Kingdom
489436,21137,BLACK RECORD COVER FRAME,6,12/1/2010 9:06,3.75,13078,United Kingdom
C489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,-2,12/2/2010 10:33,6.95,13085,United Kingdom
489437,22195,LARGE HEART MEASURING SPOONS,2,6/12/2011 11:00,1.65,13078,United Kingdom
"""
# The same file with one unreadable quantity (line 11) in a two-line order.
BAD_ROW_CSV = RETAIL_CSV + (
    "489438,22197,POPCORN HOLDER,4,6/13/2011 9:00,0.85,13078,United Kingdom\n"
    "489438,22198,PAPER CHAIN KIT,two,6/13/2011 9:00,2.95,13078,United Kingdom\n"
)

RETAIL = CsvLayout(
    order="InvoiceNo",
    customer="CustomerID",
    date="InvoiceDate",
    qty="Quantity",
    price="UnitPrice",
    sku="StockCode",
    currency="GBP",
    timezone="Europe/London",
)
RETAIL_FLAGS = [
    "--order-col", "InvoiceNo", "--customer-col", "CustomerID", "--date-col", "InvoiceDate",
    "--qty-col", "Quantity", "--price-col", "UnitPrice", "--sku-col", "StockCode",
    "--currency", "GBP", "--timezone", "Europe/London",
]  # fmt: skip


def read(text: str, layout: CsvLayout = RETAIL) -> tuple[list[dict[str, Any]], ImportReport]:
    report = ImportReport()
    return list(csv_events(text.splitlines(keepends=True), layout, report)), report


def by_order(events: list[dict[str, Any]], kind: str = "order") -> dict[str, dict[str, Any]]:
    return {e["order_id"]: e for e in events if e["type"] == kind}


def test_the_lines_of_one_order_become_one_order_event_of_their_exact_total() -> None:
    events, report = read(RETAIL_CSV)
    order = by_order(events)["489434"]
    assert order["amount"] == 265.20  # 12 × 6.95 + 12 × 6.75 + 48 × 2.10, not 264.6 + noise
    assert Decimal(str(order["amount"])) == Decimal("265.20")
    assert [(i["sku"], i["qty"], i["unit_price"]) for i in order["items"]] == [
        ("85048", 12, 6.95),
        ("79323P", 12, 6.75),
        ("21232", 48, 2.10),
    ]
    assert (order["event_id"], order["customer_id"], order["currency"]) == (
        "csv-489434",
        "13085",
        "GBP",
    )
    assert sorted(by_order(events)) == ["489434", "489435", "489436", "489437"]
    assert (report.rows, report.orders, report.refunds, report.skipped) == (8, 4, 1, [])


def test_local_times_are_read_in_the_given_zone_summer_time_included() -> None:
    orders = by_order(read(RETAIL_CSV)[0])
    assert orders["489434"]["ts"] == "2010-12-01T08:26:00Z"  # GMT in December
    assert orders["489437"]["ts"] == "2011-06-12T10:00:00Z"  # 11:00 BST


def test_a_cancellation_invoice_becomes_a_positive_refund_linked_to_its_order() -> None:
    events, _ = read(RETAIL_CSV)
    refund = by_order(events, "refund")["489434"]
    assert refund["amount"] == 13.90
    assert refund["event_id"] == "csv-489434-refund-8"  # the file line of C489434
    assert refund["items"] == [{"sku": "85048", "qty": 2, "unit_price": 6.95}]
    assert [e["type"] for e in events] == ["order", "order", "order", "refund", "order"]


def test_a_negative_quantity_in_an_ordinary_invoice_is_a_refund_of_that_invoice() -> None:
    text = "order,cust,when,qty,price\n"
    text += "A1,c1,2025-03-01T10:00:00Z,3,5\nA1,c1,2025-03-04T10:00:00Z,-1,5\n"
    layout = CsvLayout(order="order", customer="cust", date="when", qty="qty", price="price")
    events, report = read(text, layout)
    assert [(e["type"], e["order_id"], e["amount"]) for e in events] == [
        ("order", "A1", 15.0),
        ("refund", "A1", 5.0),
    ]
    assert (report.orders, report.refunds) == (1, 1)


def test_an_amount_is_rounded_to_cents_once_per_order_not_per_line() -> None:
    text = "o,c,d,q,p\n" + "".join("o1,c1,2025-01-01T00:00:00Z,1,0.333\n" for _ in range(3))
    events, _ = read(text, CsvLayout(order="o", customer="c", date="d", qty="q", price="p"))
    assert [e["amount"] for e in events] == [1.0]  # 0.999 → 1.00; per line it would be 0.99


def test_dates_without_offset_and_no_timezone_are_an_error_naming_the_flag() -> None:
    layout = CsvLayout(order="InvoiceNo", customer="CustomerID", date="InvoiceDate",
                       qty="Quantity", price="UnitPrice")  # fmt: skip
    with pytest.raises(HistoryImportError, match="--timezone") as caught:
        read(RETAIL_CSV, layout)
    assert "line 2" in str(caught.value)


def test_an_unknown_time_zone_is_an_error_naming_the_flag() -> None:
    layout = CsvLayout(order="InvoiceNo", customer="CustomerID", date="InvoiceDate",
                       timezone="Europe/Lundon")  # fmt: skip
    with pytest.raises(HistoryImportError, match="--timezone 'Europe/Lundon'"):
        read(RETAIL_CSV, layout)


def test_a_malformed_row_is_reported_by_line_and_its_whole_order_is_skipped() -> None:
    events, report = read(BAD_ROW_CSV)
    assert "489438" not in by_order(events)  # its total is unknown without line 11
    assert len(by_order(events)) == 4
    assert [(row.line, row.reason) for row in sorted(report.skipped, key=lambda r: r.line)] == [
        (10, "order 489438: line 11 of the order is malformed"),
        (11, "quantity 'two' is not a number"),
    ]
    assert "line 11: quantity 'two' is not a number" in report.summary()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("o2,,2025-01-01T00:00:00Z,1,5", "no customer id"),
        ("o2,c1,yesterday,1,5", "date 'yesterday' is not ISO-8601 or month/day/year"),
        ("o2,c1,2025-01-01T00:00:00Z,1.5,5", "quantity '1.5' is not a whole number"),
        ("o2,c1,2025-01-01T00:00:00Z,0,5", "quantity is 0"),
        ("o2,c1,2025-01-01T00:00:00Z,1,-5", "unit price -5 is negative"),
        ("o2,c1,2025-01-01T00:00:00Z,1", "the row has a different number of fields"),
    ],
)
def test_each_kind_of_unreadable_row_is_named(row: str, reason: str) -> None:
    text = f"o,c,d,q,p\no1,c1,2025-01-01T00:00:00Z,1,5\n{row}\n"
    events, report = read(text, CsvLayout(order="o", customer="c", date="d", qty="q", price="p"))
    assert [e["order_id"] for e in events] == ["o1"]
    assert [row.line for row in report.skipped] == [3]
    assert report.skipped[0].reason.startswith(reason)


def test_an_order_whose_lines_name_two_customers_is_skipped_whole() -> None:
    text = "o,c,d,q,p\no1,c1,2025-01-01T00:00:00Z,1,5\no1,c2,2025-01-01T00:00:00Z,1,5\n"
    events, report = read(text, CsvLayout(order="o", customer="c", date="d", qty="q", price="p"))
    assert events == []
    assert [(r.line, r.reason) for r in report.skipped] == [
        (2, "order o1: its lines name different customers"),
        (3, "order o1: its lines name different customers"),
    ]


def test_importing_the_same_file_again_gives_the_same_event_ids() -> None:
    first = [e["event_id"] for e in read(RETAIL_CSV)[0]]
    assert first == [e["event_id"] for e in read(RETAIL_CSV)[0]]
    assert len(set(first)) == len(first)


def test_rows_without_an_order_id_are_orders_of_their_own_with_stable_ids() -> None:
    text = "customer_id,date,amount\nc1,2025-01-01,5\nc1,2025-01-01,5\nc1,2025-01-02,-2\n"
    layout = CsvLayout(timezone="UTC")
    events, _ = read(text, layout)
    assert [(e["type"], e["amount"]) for e in events] == [
        ("order", 5.0),
        ("order", 5.0),
        ("refund", 2.0),
    ]
    assert len({e["event_id"] for e in events}) == 3  # two identical rows are two orders
    assert [e["event_id"] for e in read(text, layout)[0]] == [e["event_id"] for e in events]


def test_amount_column_rows_of_one_order_are_added_up() -> None:
    text = "Bestellung,Kunde,Datum,Summe,Währung\nB7,k1,2025-03-01T10:00:00+01:00,19.90,eur\n"
    text += "B7,k1,2025-03-01T10:00:00+01:00,0.10,eur\n"
    layout = CsvLayout(
        order="Bestellung", customer="Kunde", date="Datum", amount="Summe", currency_col="Währung"
    )
    (event,), _ = read(text, layout)
    assert (event["ts"], event["amount"], event["currency"]) == (
        "2025-03-01T09:00:00Z",
        20.0,
        "EUR",
    )


def test_every_imported_event_passes_the_live_purchase_contract() -> None:
    text = RETAIL_CSV.replace(",United Kingdom", ",France")
    events, _ = read(text, replace(RETAIL, currency="EUR"))
    for event in events:
        role, key, value = encode_event(event)
        record = decode_event(role, key, value, DecodeLimits(), now_ms=1_800_000_000_000)
        assert isinstance(record, PurchaseEvent)
        assert (record.event_id, record.amount) == (event["event_id"], event["amount"])


def test_a_missing_column_is_a_clear_error() -> None:
    with pytest.raises(HistoryImportError, match="'Datum'"):
        read("customer_id,amount\nc1,5\n", CsvLayout(date="Datum"))


def test_contradictory_flags_are_refused() -> None:
    with pytest.raises(HistoryImportError, match=r"--price-col .* --amount-col"):
        read(RETAIL_CSV, CsvLayout(price="UnitPrice", amount="UnitPrice"))
    with pytest.raises(HistoryImportError, match="--currency or --currency-col"):
        read(RETAIL_CSV, CsvLayout(currency="GBP", currency_col="Country"))


def test_jsonl_lines_pass_as_they_are_and_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"topic": "purchases", "event_id": "e1"}\n\n{not json\n[1]\n')
    report = ImportReport()
    assert list(read_history(path, None, report)) == [{"topic": "purchases", "event_id": "e1"}]
    assert [row.line for row in report.skipped] == [3, 4]
    with pytest.raises(HistoryImportError, match=r"apply to a \.csv file only"):
        read_history(path, RETAIL, ImportReport())


# The commands


def retail_file(tmp_path: Path, text: str = RETAIL_CSV) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(text)
    return path


def test_evaluate_imports_an_order_line_csv_into_profiles(tmp_path: Path) -> None:
    out = tmp_path / "profiles.jsonl"
    args = ["evaluate", "--input", str(retail_file(tmp_path)), *RETAIL_FLAGS, "--out", str(out)]
    result = CliRunner().invoke(cli, args, env={"SEGSTREAM_BASE_CURRENCY": "GBP"})
    assert result.exit_code == 0, result.output
    assert "read 8 rows: 4 orders, 1 refund" in result.stderr
    profiles = {
        p["customer_id"]: p["lifetime"] for p in map(orjson.loads, out.read_bytes().splitlines())
    }
    assert sorted(profiles) == ["13078", "13085"]
    assert (profiles["13078"]["orders"], profiles["13078"]["revenue"]) == (2, 40.65)
    assert (profiles["13085"]["orders"], profiles["13085"]["refunds"]) == (2, 1)
    assert profiles["13085"]["refund_amount"] == 13.90
    # Orders only: 265.20 + 30.60. (`revenue` itself is net of refunds where
    # the profile keeps `gross_revenue` beside it.)
    assert profiles["13085"].get("gross_revenue", profiles["13085"]["revenue"]) == 295.80


def test_evaluate_reports_skipped_rows_and_exits_3(tmp_path: Path) -> None:
    out, rejects = tmp_path / "profiles.jsonl", tmp_path / "rejects.jsonl"
    args = ["evaluate", "--input", str(retail_file(tmp_path, BAD_ROW_CSV)), *RETAIL_FLAGS]
    args += ["--out", str(out), "--rejects", str(rejects)]
    result = CliRunner().invoke(cli, args, env={"SEGSTREAM_BASE_CURRENCY": "GBP"})
    assert result.exit_code == SKIPPED_ROWS_EXIT_CODE == 3
    assert "line 11: quantity 'two' is not a number" in result.stderr
    assert len(out.read_bytes().splitlines()) == 2  # the profiles are written all the same
    assert [orjson.loads(line)["line"] for line in rejects.read_bytes().splitlines()] == [10, 11]


@pytest.mark.parametrize("command", ["evaluate", "replay"])
def test_both_commands_refuse_local_times_without_timezone(command: str, tmp_path: Path) -> None:
    flags = RETAIL_FLAGS[: RETAIL_FLAGS.index("--timezone")]
    args = [command, *(["--input"] if command == "evaluate" else []), str(retail_file(tmp_path))]
    args += [*flags, *(["--out", str(tmp_path / "p.jsonl")] if command == "evaluate" else [])]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "--timezone" in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_replay_sends_what_the_reader_reads_in_event_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sending itself is tested against the real broker (tests/integration);
    # here only what replay hands to the sender.
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "_send_with_progress", lambda events, speed: sent.extend(events))
    path = retail_file(tmp_path)
    result = CliRunner().invoke(cli, ["replay", str(path), *RETAIL_FLAGS])
    assert result.exit_code == 0, result.output
    expected = in_event_time_order(list(read_history(path, RETAIL, ImportReport())))
    assert sent == expected
    assert len(sent) == 5


def test_replay_and_evaluate_take_the_same_import_options() -> None:
    group = typer.main.get_command(cli)
    options = {
        name: {opt for param in group.commands[name].params for opt in param.opts}  # type: ignore[attr-defined]
        for name in ("replay", "evaluate")
    }
    flags = {"--amount-col", "--currency-col", "--date-format", "--cancel-prefix", "--rejects"}
    assert {*RETAIL_FLAGS[::2], *flags} <= options["replay"] & options["evaluate"]


def test_a_file_that_is_not_utf8_is_refused_and_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    text = "o,customer_id,date,amount\n1,Zoë,2025-01-01T00:00:00Z,5\n"
    latin1, bom = tmp_path / "latin1.csv", tmp_path / "bom.csv"
    latin1.write_bytes(text.encode("latin-1"))
    bom.write_bytes(text.encode("utf-8-sig"))
    with pytest.raises(HistoryImportError, match="not UTF-8"):
        list(read_history(latin1, CsvLayout(order="o"), ImportReport()))
    (event,) = read_history(bom, CsvLayout(order="o"), ImportReport())
    assert (event["customer_id"], event["amount"]) == ("Zoë", 5.0)
