"""``segstream demo``: the whole system on one machine, start to finish.

Starts the local broker (unless ``SEGSTREAM_KAFKA_BOOTSTRAP`` is set),
creates the topics, starts a worker, streams sample events, shows what the
worker computed, and stops everything it started — also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from schemas.errors import SegstreamError
from streams.admin import create_topics
from streams.local_kafka import LocalKafka, free_port
from streams.process import WorkerProcess
from streams.producer import send_events
from streams.settings import ENV_PREFIX, load_settings

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


def run_demo(console: Console, customers: int = 20) -> None:
    """Run the demo; everything started here is stopped before returning."""
    external = os.environ.get(ENV_PREFIX + "KAFKA_BOOTSTRAP")
    broker: LocalKafka | None = None
    worker: WorkerProcess | None = None
    # Each demo run uses a fresh consumer group, so old table state must go too.
    shutil.rmtree(DEMO_DIR / "worker", ignore_errors=True)
    try:
        if external:
            bootstrap = external
            console.print(f"Using Kafka at {bootstrap}")
        else:
            console.print("Starting a local Kafka broker (first run fetches its jars) …")
            broker = LocalKafka(home=DEMO_DIR / "kafka").start()
            bootstrap = broker.bootstrap
            console.print(f"Kafka {broker.version} at {bootstrap}")
        settings = load_settings(kafka_bootstrap=bootstrap, data_dir=DEMO_DIR / "worker")
        created = create_topics(settings)
        console.print(f"Topics ready: {len(created)}")
        worker = WorkerProcess(
            env={
                "KAFKA_BOOTSTRAP": bootstrap,
                "DATA_DIR": str(DEMO_DIR / "worker"),
                "WEB_PORT": str(free_port()),
                "APP_ID": f"segstream-demo-{int(time.time())}",
                # A throwaway token: the demo uses the API the way a client must.
                "WEB_TOKEN": secrets.token_urlsafe(32),
            },
            log_path=DEMO_DIR / "worker.log",
        ).start()
        console.print("Starting a worker …")
        worker.wait_ready()
        events = list(sample_events(customers))
        for _ in send_events(settings, events):
            pass
        console.print(f"Sent {len(events)} events for {customers} customers")
        expected: dict[str, int] = {}
        for event in events:
            expected[event["customer_id"]] = expected.get(event["customer_id"], 0) + 1
        profiles = _await_profiles(worker, expected)
        _print_profiles(console, profiles)
        console.print(
            f"Profile API: {worker.url}/customers/<id> (bearer token required)   "
            f"worker log: {worker.log_path}"
        )
    except KeyboardInterrupt:
        console.print("Interrupted; stopping …")
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        console.print("Stopped everything the demo started.")


def _await_profiles(
    worker: WorkerProcess, expected: dict[str, int], timeout_s: float = 60.0
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    profiles: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for customer_id, count in expected.items():
            if profiles.get(customer_id, {}).get("events") == count:
                continue
            with contextlib.suppress(OSError):
                status, body = worker.get(f"/customers/{customer_id}")
                if status == 200:
                    profiles[customer_id] = orjson.loads(body)
        if all(profiles.get(c, {}).get("events") == n for c, n in expected.items()):
            return profiles
        time.sleep(0.5)
    raise SegstreamError("the worker did not process every sample event in time")


def _print_profiles(console: Console, profiles: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Profiles computed by the worker")
    for column in ("customer", "events", "by type", "sessions", "channel", "last seen"):
        table.add_column(column)
    for customer_id in sorted(profiles):
        profile = profiles[customer_id]
        table.add_row(
            customer_id,
            str(profile["events"]),
            ", ".join(f"{k.split('.')[-1]}={v}" for k, v in profile["event_counts"].items()),
            str(profile["lifetime"]["sessions"]),
            str(profile["preferred_channel"]),
            _fmt_ms(profile["last_seen_ms"]),
        )
    console.print(table)


def _fmt_ms(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M")
