"""``segstream demo``: the whole system on one machine, start to finish.

Starts the local broker (unless ``SEGSTREAM_KAFKA_BOOTSTRAP`` is set),
creates the topics, starts a worker, streams the simulator (1,500 customers
over 60 days of event time by default, about 140,000 events, as fast as the
worker keeps up) and
shows a live view — throughput, lag, segment populations, the latest segment
changes and triggers. It ends with a summary and where to look next, and
stops everything it started — also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from models.simulator import SimConfig, simulate
from streams.cli.admin import create_topics
from streams.cli.local_kafka import LocalKafka, free_port
from streams.cli.process import WorkerProcess
from streams.cli.tail import describe_record
from streams.producer import make_consumer, send_events
from streams.settings import ENV_PREFIX, Settings, load_settings, throwaway_secrets

DEMO_DIR = Path("var/demo")
SAMPLE_TYPES = ("session_start", "page_view", "product_view", "add_to_cart", "email_open")


def sample_events(customers: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """A small deterministic clickstream for the demo's first path."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(customers * 10):
        customer = f"c{rng.randrange(customers):05d}"
        ts = start + timedelta(minutes=index * 7)
        yield {
            "topic": "clickstream",
            "event_id": f"e{index:07d}",
            "customer_id": customer,
            "ts": ts.isoformat(),
            "type": rng.choice(SAMPLE_TYPES),
            "channel": rng.choice(("web", "app", "email")),
            "session_id": f"s{index // 5:06d}",
        }


def run_demo(
    console: Console, customers: int = 1500, days: int = 60, keep_running: bool = False
) -> None:
    """Run the demo; everything started here is stopped before returning (also on Ctrl-C)."""
    # A terminated demo cleans up like an interrupted one.
    signal.signal(signal.SIGTERM, _interrupt)
    external = os.environ.get(ENV_PREFIX + "KAFKA_BOOTSTRAP")
    broker: LocalKafka | None = None
    worker: WorkerProcess | None = None
    # Each demo run uses a fresh consumer group, so old table state must go too.
    shutil.rmtree(DEMO_DIR / "worker", ignore_errors=True)
    started = time.monotonic()
    try:
        if external:
            bootstrap = external
            console.print(f"Using Kafka at {bootstrap}")
        else:
            console.print("Starting a local Kafka broker (first run fetches its jars) …")
            broker = LocalKafka(home=DEMO_DIR / "kafka").start()
            bootstrap = broker.bootstrap
            console.print(f"Kafka {broker.version} at {bootstrap}")
        prefix = f"demo{int(time.time())}."
        settings = load_settings(
            kafka_bootstrap=bootstrap, data_dir=DEMO_DIR / "worker", topic_prefix=prefix
        )
        created = create_topics(settings)
        console.print(f"Topics ready: {len(created)}")
        token = secrets.token_urlsafe(32)
        worker = WorkerProcess(
            env={
                "KAFKA_BOOTSTRAP": bootstrap,
                "DATA_DIR": str(DEMO_DIR / "worker"),
                "WEB_PORT": str(free_port()),
                "APP_ID": f"segstream-demo-{int(time.time())}",
                "TOPIC_PREFIX": prefix,
                # A throwaway token: the demo uses the API the way a client must.
                "WEB_TOKEN": token,
                # Fresh keys too: a worker refuses the public placeholders.
                **throwaway_secrets(),
            },
            log_path=DEMO_DIR / "worker.log",
        ).start()
        console.print("Starting a worker …")
        worker.wait_ready()
        console.print(f"Simulating {customers:,} customers over {days} days of event time …")
        events, _ = simulate(SimConfig(customers=customers, days=days, seed=7))
        view = LiveView(settings, worker, len(events))
        sender = threading.Thread(target=view.send_all, args=(events,), daemon=True)
        sender.start()
        with Live(view.render(), console=console, refresh_per_second=2) as live:
            while not view.finished():
                time.sleep(1.0)
                view.poll()
                live.update(view.render())
        view.close()
        _print_summary(console, view, worker, time.monotonic() - started, prefix)
        if keep_running:
            console.print("Still running; Ctrl-C stops the worker and the broker.")
            while worker.alive():
                time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("Interrupted; stopping …")
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        console.print("Stopped everything the demo started.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class LiveView:
    """What the demo shows while events flow: throughput, lag, segments, latest outputs."""

    def __init__(self, settings: Settings, worker: WorkerProcess, total: int) -> None:
        self.settings = settings
        self.worker = worker
        self.total = total
        self.sent = 0
        self.sending_done = False
        self.consumed = 0.0
        self.rate = 0.0
        self.lag = 0.0
        self.model_version = 0.0
        self.quiet_polls = 0
        self.segments: dict[str, dict[str, int]] = {}
        self.counts = {"changes": 0, "triggers": 0}
        self.latest: deque[str] = deque(maxlen=10)
        self._last = (time.monotonic(), 0.0)
        names = settings.topic_names()
        self.inputs = [names[role] for role in ("clickstream", "purchases", "support")]
        self.outputs = make_consumer(
            settings, names["segment_changes"], names["triggers"], group_id=None
        )

    def send_all(self, events: list[dict[str, Any]]) -> None:
        for _ in send_events(self.settings, events):
            self.sent += 1
        self.sending_done = True

    def poll(self) -> None:
        with contextlib.suppress(OSError):
            status, body = self.worker.get("/metrics")
            if status == 200:
                text = body.decode()
                consumed = _metric_sum(text, "segstream_events_consumed_total")
                consumed += _metric_sum(text, "segstream_dead_letters_total")
                now = time.monotonic()
                then, before = self._last
                self.rate = (consumed - before) / max(now - then, 1e-6)
                self._last = (now, consumed)
                self.quiet_polls = self.quiet_polls + 1 if consumed == self.consumed else 0
                self.consumed = consumed
                self.lag = sum(
                    _metric_sum(text, f'segstream_consumer_lag_messages{{topic="{topic}"')
                    for topic in self.inputs
                )
                self.model_version = _metric_sum(text, "segstream_model_version")
            status, body = self.worker.get("/segments")
            if status == 200:
                self.segments = orjson.loads(body)["segments"]
        for batch in self.outputs.poll(timeout_ms=200, max_records=2000).values():
            for record in batch:
                value = orjson.loads(record.value)
                self.counts["triggers" if "trigger_id" in value else "changes"] += 1
                self.latest.append(describe_record(record.topic, value))

    def finished(self) -> bool:
        return self.sending_done and self.lag == 0 and self.quiet_polls >= 3

    def close(self) -> None:
        self.poll()
        self.outputs.close()

    def render(self) -> Group:
        head = Table.grid(padding=(0, 3))
        head.add_row(
            f"sent [bold]{self.sent:,}[/]/{self.total:,}",
            f"processed [bold]{int(self.consumed):,}[/]",
            f"throughput [bold]{self.rate:,.0f}[/] events/s",
            f"lag [bold]{int(self.lag):,}[/]",
            f"model v[bold]{int(self.model_version)}[/]",
            f"changes [bold]{self.counts['changes']:,}[/]",
            f"triggers [bold]{self.counts['triggers']:,}[/]",
        )
        segments = Table(title="Customers per segment", expand=True)
        shown = ("lifecycle", "rfm_segment", "churn_risk", "persona", "engagement")
        for dim in shown:
            segments.add_column(dim)
        columns = [sorted(self.segments.get(d, {}).items(), key=lambda kv: -kv[1]) for d in shown]
        for row in range(max((len(c) for c in columns), default=0)):
            segments.add_row(
                *(f"{c[row][0]} {c[row][1]:,}" if row < len(c) else "" for c in columns)
            )
        latest = Table(title="Latest segment changes and triggers", expand=True, show_header=False)
        latest.add_column("record", overflow="ellipsis", no_wrap=True)
        for line in self.latest:
            latest.add_row(line)
        return Group(head, segments, latest)


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name if name.endswith('"') else (name + "{", name + " ")):
            value = float(line.rsplit(" ", 1)[1])
            if value == value:  # NaN until defined
                total += value
    return total


def _print_summary(
    console: Console, view: LiveView, worker: WorkerProcess, elapsed_s: float, prefix: str
) -> None:
    console.print(
        f"\nDone in {elapsed_s:.0f} s: {int(view.consumed):,} events processed, "
        f"{view.counts['changes']:,} segment changes, {view.counts['triggers']:,} triggers, "
        f"model version {int(view.model_version)}."
    )
    console.print("Where to look next (run with --keep-running to keep the worker up):")
    console.print(
        f"  profiles   curl -H 'Authorization: Bearer $TOKEN' {worker.url}/customers/c000001"
    )
    console.print(f"  segments   {worker.url}/segments    models  {worker.url}/models")
    console.print(f"  metrics    {worker.url}/metrics")
    console.print(f"  live       SEGSTREAM_TOPIC_PREFIX={prefix} segstream tail --from-beginning")
    console.print(f"  worker log {worker.log_path}")
