"""The ``segstream`` command line.

Every verb has ``--help``. Configuration comes from ``SEGSTREAM_*``
variables (see the README's configuration reference); flags here only pick
what to do.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console

from schemas.errors import SegstreamError
from streams.local_kafka import LocalKafka, free_port, port_open
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
cli.add_typer(kafka_cli, name="kafka")
cli.add_typer(topics_cli, name="topics")
cli.add_typer(schemas_cli, name="schemas")


def _fail(exc: SegstreamError) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1) from exc


@kafka_cli.command("start")
def kafka_start(
    port: Annotated[int, typer.Option(help="Broker port; 0 picks a free one.")] = 9092,
) -> None:
    """Start a local Kafka broker in the background (fetches the jars once)."""
    settings = load_settings()
    existing = LocalKafka.from_state(settings.kafka_home)
    if existing is not None and existing.running():
        console.print(f"already running: {existing.bootstrap}")
        return
    if port and port_open("127.0.0.1", port):
        port = free_port()
    try:
        broker = LocalKafka(home=settings.kafka_home, broker_port=port).start()
    except SegstreamError as exc:
        _fail(exc)
        return
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


@topics_cli.command("create")
def topics_create() -> None:
    """Create every input, output, dead-letter and internal topic (idempotent)."""
    from streams.admin import create_topics

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
    """Run a segstream worker (same as `faust -A streams.app worker`)."""
    from faust.worker import Worker

    from streams.app import app, settings

    logging.basicConfig(level=settings.log_level.upper())
    Worker(app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


@cli.command()
def demo(
    customers: Annotated[int, typer.Option(help="Customers in the sample stream.")] = 20,
) -> None:
    """Start a broker and a worker, stream sample events, show what was computed."""
    from streams.demo import run_demo

    try:
        run_demo(console, customers=customers)
    except SegstreamError as exc:
        _fail(exc)


def main() -> None:
    """Entry point of the ``segstream`` console script."""
    cli()


if __name__ == "__main__":
    sys.exit(main())
