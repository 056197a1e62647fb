"""The ``segstream`` commands (typer); :func:`streams.cli.main` runs them.

Every verb has ``--help``. Configuration comes from ``SEGSTREAM_*``
variables (see the README's configuration reference); flags here only pick
what to do.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from schemas.errors import SegstreamError
from streams.cli import history_import as history
from streams.cli.local_kafka import DEFAULT_BROKER_PORT, KAFKA_TOOLS, LocalKafka, tool_command
from streams.settings import load_settings

console = Console()
cli = typer.Typer(
    help="segstream: real-time customer segmentation and churn on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_cli = typer.Typer(
    help="Run a local single-node Kafka broker (no Docker).", no_args_is_help=True
)
topics_cli = typer.Typer(help="Manage segstream's Kafka topics.", no_args_is_help=True)
schemas_cli = typer.Typer(help="Event contracts (JSON Schema).", no_args_is_help=True)
audiences_cli = typer.Typer(
    help="Your own traits and audiences (SEGSTREAM_DEFINITIONS_FILE).", no_args_is_help=True
)
cli.add_typer(kafka_cli, name="kafka")
cli.add_typer(topics_cli, name="topics")
cli.add_typer(schemas_cli, name="schemas")
cli.add_typer(audiences_cli, name="audiences")


def _fail(exc: SegstreamError) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1) from exc


@kafka_cli.command("start")
def kafka_start(
    port: Annotated[
        int | None,
        typer.Option(
            help="Broker port. Default: the one this broker had last time, else 9092; "
            "0 picks a free one. A port in use is replaced by a free one."
        ),
    ] = None,
) -> None:
    """Start the local Kafka broker in the background, with the data it had.

    The first start fetches the jars and formats a new broker in
    SEGSTREAM_KAFKA_HOME; later starts (after `kafka stop`, a crash or a
    reboot) keep its topics, records and committed offsets.
    `segstream kafka reset` is the only command that deletes them.
    """
    settings = load_settings()
    existing = LocalKafka.from_state(settings.kafka_home)
    if existing is not None and existing.running():
        console.print(f"already running: {existing.bootstrap}")
        return
    broker = LocalKafka.for_home(settings.kafka_home, port)
    resuming = broker.formatted
    try:
        broker.start()
    except SegstreamError as exc:
        _fail(exc)
        return
    if resuming:
        console.print(
            f"Started again with its data in {broker.home} (cluster id {broker.cluster_id()})",
            soft_wrap=True,
        )
    else:
        console.print(f"Formatted a new broker in {broker.home}", soft_wrap=True)
    wanted = port if port is not None else existing.broker_port if existing else DEFAULT_BROKER_PORT
    if wanted and wanted != broker.broker_port:
        console.print(f"note: port {wanted} is in use; the broker listens on {broker.broker_port}")
    console.print(f"Kafka {broker.version} running at {broker.bootstrap} (pid {broker.pid})")
    console.print(f"export SEGSTREAM_KAFKA_BOOTSTRAP={broker.bootstrap}")


@kafka_cli.command("stop")
def kafka_stop() -> None:
    """Stop the broker started by `segstream kafka start`."""
    broker = LocalKafka.from_state(load_settings().kafka_home)
    if broker is None or not broker.running():
        console.print("no local broker running")
        return
    broker.stop()
    console.print("stopped")


@kafka_cli.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs, and where."""
    broker = LocalKafka.from_state(load_settings().kafka_home)
    if broker is None or not broker.running():
        console.print("no local broker running")
        raise typer.Exit(1)
    console.print(f"Kafka {broker.version} running at {broker.bootstrap} (pid {broker.pid})")


@kafka_cli.command("reset")
def kafka_reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete the local broker's data: every topic, record and committed offset.

    Refuses while the broker runs (stop it with `segstream kafka stop`
    first). The next `segstream kafka start` formats a new, empty broker.
    """
    home = load_settings().kafka_home
    broker = LocalKafka.from_state(home) or LocalKafka(home=home)
    if broker.running():
        console.print(
            f"[red]error:[/red] the broker is running (pid {broker.pid}); "
            "stop it first with `segstream kafka stop`"
        )
        raise typer.Exit(1)
    if not home.exists():
        console.print(f"nothing to delete: {home} does not exist")
        return
    if not yes and not typer.confirm(
        f"Delete every topic, record and committed offset of the broker in {home}?",
        default=False,
    ):
        console.print("nothing deleted")
        raise typer.Exit(1)
    try:
        broker.reset()
    except SegstreamError as exc:
        _fail(exc)
        return
    console.print(
        f"deleted {home}; the next `segstream kafka start` formats a new broker", soft_wrap=True
    )


@kafka_cli.command(
    "tool",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def kafka_tool(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(help=f"One of: {', '.join(KAFKA_TOOLS)}.", show_default=False),
    ] = None,
) -> None:
    """Run one of Kafka's own command-line tools on the cached jars.

    `segstream kafka tool kafka-topics --list` runs what `kafka-topics.sh
    --list` runs in a Kafka distribution; every argument after the name goes
    to the tool (`--help` too). Without `--bootstrap-server`, the local
    broker is used when it runs, else SEGSTREAM_KAFKA_BOOTSTRAP.
    """
    if name is None:
        console.print("usage: segstream kafka tool NAME [ARGS]...")
        console.print(f"tools: {', '.join(KAFKA_TOOLS)}")
        raise typer.Exit(2)
    settings = load_settings()
    local = LocalKafka.from_state(settings.kafka_home)
    bootstrap = local.bootstrap if local is not None and local.running() else None
    try:
        argv = tool_command(name, ctx.args, bootstrap or settings.kafka_bootstrap)
    except SegstreamError as exc:
        _fail(exc)
        return
    try:
        code = subprocess.run(argv, check=False).returncode  # noqa: S603 - fixed argv, no shell
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@topics_cli.command("create")
def topics_create() -> None:
    """Create every input, output, dead-letter and internal topic (idempotent)."""
    from streams.cli.admin import create_topics

    try:
        result = create_topics(load_settings())
    except SegstreamError as exc:
        _fail(exc)
        return
    for name, state in result.items():
        console.print(f"{state:>8}  {name}")


@schemas_cli.command("export")
def schemas_export() -> None:
    """Write every contract's JSON Schema into schemas/json/."""
    from schemas.export import export_all

    for path in export_all():
        console.print(f"wrote {path}")


@cli.command()
def worker() -> None:
    """Run a segstream worker (same as `faust -A streams.worker worker`)."""
    from faust.worker import Worker

    from streams.auth import check_web_auth
    from streams.settings import check_secrets
    from streams.worker import app, prepare_worker, settings

    try:
        check_web_auth(settings)
        check_secrets(settings)
    except SegstreamError as exc:
        _fail(exc)
    logging.basicConfig(level=settings.log_level.upper())
    prepare_worker()
    Worker(app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


def _send_with_progress(events: list[dict[str, object]], speed: float) -> None:
    from rich.progress import Progress

    from streams.producer import send_events

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("sending", total=len(events))
        for sent in send_events(load_settings(), events, speed=speed):
            if sent % 1000 == 0 or sent == len(events):
                progress.update(task, completed=sent)


@cli.command()
def simulate(
    customers: Annotated[int, typer.Option(help="Number of simulated customers.")] = 1000,
    days: Annotated[int, typer.Option(help="Event-time span in days.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same output.")] = 42,
    start: Annotated[str, typer.Option(help="Start of the span, ISO-8601 date.")] = "2026-01-01",
    malformed_rate: Annotated[
        float, typer.Option(help="Share of good events followed by a malformed record.")
    ] = 0.0,
    out: Annotated[
        Path | None, typer.Option(help="Write DIR/events.jsonl and DIR/truth.jsonl.")
    ] = None,
    to_kafka: Annotated[bool, typer.Option(help="Stream the events to the input topics.")] = False,
    speed: Annotated[
        float, typer.Option(help="With --to-kafka: 0 = as fast as possible, k = k× real time.")
    ] = 0.0,
    process: Annotated[
        str,
        typer.Option(
            help="How customers buy: 'planted' (steady rates; fading customers stop "
            "everything at once) or 'realistic' (rates differ, silent dropout, gaps, "
            "comebacks, mostly one-time buyers)."
        ),
    ] = "planted",
) -> None:
    """Simulate customers from planted personas, with known ground truth."""
    from datetime import UTC, datetime

    from models.simulator import SimConfig, write_outputs
    from models.simulator import simulate as run_simulation

    if out is None and not to_kafka:
        console.print("[red]error:[/red] give --out DIR, --to-kafka, or both")
        raise typer.Exit(2)
    if process not in ("planted", "realistic"):
        console.print("[red]error:[/red] --process must be planted or realistic")
        raise typer.Exit(2)
    config = SimConfig(
        customers=customers,
        days=days,
        seed=seed,
        start=datetime.fromisoformat(start).replace(tzinfo=UTC),
        malformed_rate=malformed_rate,
        process="realistic" if process == "realistic" else "planted",
    )
    if out is not None:
        n_events, n_customers = write_outputs(config, out)
        console.print(f"wrote {n_events} events for {n_customers} customers to {out}")
    if to_kafka:
        events, _ = run_simulation(config)
        _send_with_progress(events, speed)


@cli.command()
def replay(
    file: Annotated[Path, typer.Argument(help="events.jsonl, or an order export .csv")],
    speed: Annotated[float, typer.Option(help="0 = as fast as possible, k = k× real time.")] = 0.0,
    order_col: history.OrderCol = None,
    customer_col: history.CustomerCol = None,
    date_col: history.DateCol = None,
    qty_col: history.QtyCol = None,
    price_col: history.PriceCol = None,
    amount_col: history.AmountCol = None,
    sku_col: history.SkuCol = None,
    currency: history.Currency = None,
    currency_col: history.CurrencyCol = None,
    timezone: history.Timezone = None,
    date_format: history.DateFormat = None,
    cancel_prefix: history.CancelPrefix = None,
    rejects: history.Rejects = None,
    historical: Annotated[
        bool,
        typer.Option(
            "--historical",
            help="Mark the events as a backfill of past history: changes at moments older "
            "than SEGSTREAM_HISTORICAL_AFTER_HOURS are sent with historical: true, and "
            "their triggers are not sent.",
        ),
    ] = False,
) -> None:
    """Send a history file to the input topics in event-time order (backfill).

    Exit status 3: the events were sent, but some rows of the file were skipped
    (listed on stderr).
    """
    from schemas.history import ImportReport, read_history
    from streams.producer import in_event_time_order, mark_historical

    layout = history.csv_layout(
        order_col=order_col,
        customer_col=customer_col,
        date_col=date_col,
        qty_col=qty_col,
        price_col=price_col,
        amount_col=amount_col,
        sku_col=sku_col,
        currency=currency,
        currency_col=currency_col,
        timezone=timezone,
        date_format=date_format,
        cancel_prefix=cancel_prefix,
    )
    report = ImportReport()
    try:
        events = list(read_history(file, layout, report))
    except SegstreamError as exc:
        _fail(exc)
        return
    events = in_event_time_order(events)
    if historical:
        events = [mark_historical(event) for event in events]
    _send_with_progress(events, speed)
    marked = " (historical)" if historical else ""
    console.print(f"sent {len(events)} events from {file}{marked}")
    history.finish_import(report, rejects)


@cli.command()
def evaluate(
    input_file: Annotated[
        Path, typer.Option("--input", help="History: events.jsonl, or an order export .csv.")
    ],
    out: Annotated[Path, typer.Option(help="Write one JSON profile per customer here.")],
    cutoff: Annotated[
        str | None, typer.Option(help="Profiles as of this event time (ISO-8601 or epoch ms).")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the models' progressive-validation report (JSON) here."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Simulator truth.jsonl: add ARI and churn AUC against it to the report."),
    ] = None,
    changes: Annotated[
        Path | None,
        typer.Option(
            help="Write every segment change and trigger the run computed (JSON Lines) here: "
            "what would have been sent over the period."
        ),
    ] = None,
    order_col: history.OrderCol = None,
    customer_col: history.CustomerCol = None,
    date_col: history.DateCol = None,
    qty_col: history.QtyCol = None,
    price_col: history.PriceCol = None,
    amount_col: history.AmountCol = None,
    sku_col: history.SkuCol = None,
    currency: history.Currency = None,
    currency_col: history.CurrencyCol = None,
    timezone: history.Timezone = None,
    date_format: history.DateFormat = None,
    cancel_prefix: history.CancelPrefix = None,
    rejects: history.Rejects = None,
) -> None:
    """Run the worker's logic over a history file without a broker; write profiles.

    Exit status 3: the profiles were written, but some rows of the file were
    skipped (listed on stderr).
    """
    import orjson

    from models.simulator import read_truth
    from schemas.event_time import parse_event_time
    from schemas.history import ImportReport, read_history
    from streams.offline import evaluate as run_offline
    from streams.offline import score_against_truth, write_outputs

    cutoff_ms = (
        parse_event_time(int(cutoff) if cutoff and cutoff.isdigit() else cutoff) if cutoff else None
    )
    layout = history.csv_layout(
        order_col=order_col,
        customer_col=customer_col,
        date_col=date_col,
        qty_col=qty_col,
        price_col=price_col,
        amount_col=amount_col,
        sku_col=sku_col,
        currency=currency,
        currency_col=currency_col,
        timezone=timezone,
        date_format=date_format,
        cancel_prefix=cancel_prefix,
    )
    imported = ImportReport()
    try:
        run = run_offline(read_history(input_file, layout, imported), load_settings(), cutoff_ms)
    except SegstreamError as exc:
        _fail(exc)
        return
    profiles = list(run.summaries(cutoff_ms))
    with open(out, "wb") as handle:
        for profile in profiles:
            handle.write(orjson.dumps(profile) + b"\n")
    rejected = sum(run.rejected.values())
    console.print(
        f"wrote {len(profiles)} profiles to {out} ({rejected} events rejected: {run.rejected})"
    )
    if changes is not None:
        n_changes, n_triggers = write_outputs(run, changes)
        console.print(f"wrote {n_changes} segment changes and {n_triggers} triggers to {changes}")
    if report is not None:
        body: dict[str, object] = {"models": run.models.describe()}
        if truth is not None:
            body["against_truth"] = score_against_truth(profiles, read_truth(truth))
            console.print(f"against truth: {body['against_truth']}")
        report.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        console.print(f"wrote the model report to {report}")
    history.finish_import(imported, rejects)


@audiences_cli.command("backtest")
def audiences_backtest(
    definitions: Annotated[Path, typer.Option(help="The definitions file (YAML) to try.")],
    input_file: Annotated[
        Path, typer.Option("--input", help="History: events.jsonl, or an order export .csv.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the daily figures here: .json, or .csv (one row per day)."),
    ] = None,
    cutoff: Annotated[
        str | None, typer.Option(help="Run event time on to here (ISO-8601 or epoch ms).")
    ] = None,
) -> None:
    """What each audience would have done over a history, before it goes live.

    Replays the history through the worker's engine with these definitions
    (no broker) and shows, per audience and day, its size and how many
    customers entered and left. A broken definitions file exits with status
    1 and the error (its line, field and what was expected).
    """
    import csv

    import orjson
    from rich.table import Table

    from schemas.event_time import parse_event_time
    from schemas.history import ImportReport, read_history
    from streams.offline import audience_backtest
    from streams.offline import evaluate as run_offline

    cutoff_ms = (
        parse_event_time(int(cutoff) if cutoff and cutoff.isdigit() else cutoff) if cutoff else None
    )
    try:
        settings = load_settings().model_copy(update={"definitions_file": definitions})
        loaded = settings.definitions()
        assert loaded is not None  # noqa: S101 - a file was given
        imported = ImportReport()
        run = run_offline(read_history(input_file, None, imported), settings, cutoff_ms)
    except SegstreamError as exc:
        _fail(exc)
        return
    daily = audience_backtest(run.outputs.changes, loaded.audiences)
    for name, rows in daily.items():
        table = Table(title=f"audience {name}", show_lines=False)
        for column in ("day", "size", "entered", "exited"):
            table.add_column(column, justify="left" if column == "day" else "right")
        for row in rows:
            if row["entered"] or row["exited"]:
                table.add_row(row["day"], *(str(row[k]) for k in ("size", "entered", "exited")))
        console.print(table)
        entered = sum(r["entered"] for r in rows)
        exited = sum(r["exited"] for r in rows)
        final = rows[-1]["size"] if rows else 0
        peak = max((r["size"] for r in rows), default=0)
        console.print(
            f"{name}: {entered} entries, {exited} exits, {final} members at the end, peak {peak}"
        )
    if out is not None:
        if out.suffix == ".csv":
            with out.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["audience", "day", "size", "entered", "exited"])
                for name, rows in daily.items():
                    for row in rows:
                        writer.writerow(
                            [name, row["day"], row["size"], row["entered"], row["exited"]]
                        )
        else:
            body = {
                "definitions_version": loaded.version,
                "definitions_digest": loaded.digest,
                "audiences": daily,
            }
            out.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        console.print(f"wrote the daily figures to {out}")


@cli.command("export-profiles")
def export_profiles(
    out: Annotated[Path, typer.Option(help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    audience: Annotated[
        str | None,
        typer.Option(help="Only the members of this audience (SEGSTREAM_DEFINITIONS_FILE)."),
    ] = None,
) -> None:
    """Write every current profile (from the state changelogs) as JSONL or CSV."""
    from streams.cli.export import export_profiles as run_export

    if fmt not in ("jsonl", "csv"):
        console.print("[red]error:[/red] --format must be jsonl or csv")
        raise typer.Exit(2)
    try:
        count = run_export(load_settings(), out, "csv" if fmt == "csv" else "jsonl", audience)
    except SegstreamError as exc:
        _fail(exc)
        return
    console.print(f"wrote {count} profiles to {out}")


@cli.command()
def tail(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not now.")
    ] = False,
    kinds: Annotated[str, typer.Option(help="Which topics: changes, triggers or both.")] = "both",
) -> None:
    """Print segment changes and triggers live, human-readable (Ctrl-C to stop)."""
    import orjson

    from streams.cli.tail import describe_record
    from streams.producer import make_consumer

    names = load_settings().topic_names()
    topics = {
        "changes": [names["segment_changes"]],
        "triggers": [names["triggers"]],
        "both": [names["segment_changes"], names["triggers"]],
    }.get(kinds)
    if topics is None:
        console.print("[red]error:[/red] --kinds must be changes, triggers or both")
        raise typer.Exit(2)
    consumer = make_consumer(
        load_settings(),
        *topics,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        for message in consumer:
            console.print(describe_record(message.topic, orjson.loads(message.value)))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@cli.command()
def demo(
    customers: Annotated[int, typer.Option(help="Simulated customers.")] = 1500,
    days: Annotated[int, typer.Option(help="Days of event time simulated.")] = 60,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Keep the worker up after the summary.")
    ] = False,
) -> None:
    """Start a broker and a worker, stream the simulator, show it live, then stop."""
    from streams.cli.demo import run_demo

    try:
        run_demo(console, customers=customers, days=days, keep_running=keep_running)
    except SegstreamError as exc:
        _fail(exc)
