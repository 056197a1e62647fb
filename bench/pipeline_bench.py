"""Worker throughput, per-event cost, store size and RSS on the real broker.

    .venv/bin/python -m bench.pipeline_bench [--customers 5000] [--days 60]
        [--modes faust_floor,batched,naive] [--out bench/results/pipeline.json]

One run, side by side on one pre-produced simulator workload (all three
topics, realistic mix), on a local Kafka broker this script starts:

* ``naive``   — ``SEGSTREAM_BATCH_MAX_EVENTS=1``, ``SEGSTREAM_WRITE_BACK=false``:
                one table write, hence one changelog record, per event
                (Faust's usual pattern), same code otherwise;
* ``batched`` — the default: batches of up to 1,000 events, state in a
                write-back cache written once per customer per offset commit;
* ``faust_floor`` — a bare Faust agent on the same topics that decodes and
                discards (``bench/apps/faust_floor.py``, same consumer tuning):
                the most any Faust app can do here.

Each mode gets a fresh worker (fresh consumer group and state) reading the
same topics from the beginning. Throughput is events accepted (consumed +
dead-lettered, from the worker's own metrics) divided by the time from the
worker being ready until the last event is processed. Also reported: the
worker's peak RSS (VmHWM), the RocksDB store size, and the pure state-update
cost per event measured offline (``update_customer`` alone).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from bench.machine import describe, save_results
from models.pipeline import new_population, update_customer
from models.sentiment import compound
from models.simulator import SimConfig, simulate
from schemas.decode import DecodeLimits, decode_event
from streams.cli.admin import create_topics
from streams.cli.local_kafka import LocalKafka, free_port
from streams.cli.process import WorkerProcess
from streams.producer import encode_event, make_producer, send_events
from streams.settings import Settings, throwaway_secrets

RESULTS = Path(__file__).resolve().parent / "results"


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of a counter family in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process, MiB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far, all its threads, seconds."""
    # /proc/<pid>/stat: utime and stime are the 14th and 15th fields; the
    # command name (2nd, in parentheses) may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU the whole machine has spent busy so far (every core), seconds."""
    busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, busy)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def dir_size_mb(path: Path) -> float:
    """Disk usage of a directory, MiB."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)  # noqa: S603, S607
    return int(out.stdout.split()[0]) / 1024 if out.stdout else 0.0


def state_update_cost_us(events: list[dict[str, Any]], settings: Settings) -> float:
    """Pure ``update_customer`` cost per good event, µs (no Kafka, no Faust)."""
    limits = DecodeLimits()
    config = settings.profile_config()
    now = time.time_ns() // 1_000_000
    decoded = []
    for event in events:
        if "malformed" in event or "customer_id" not in event or event["type"] == "identify":
            continue
        role, key, value = encode_event(event)
        record = decode_event(role, key, value, limits, now)
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        decoded.append(fields)
    profiles: dict[str, Any] = {}
    population = new_population()
    start = time.perf_counter()
    for fields in decoded:
        customer = fields["customer_id"]
        profiles[customer], _ = update_customer(
            profiles.get(customer), [fields], population, config, compound
        )
    return (time.perf_counter() - start) / len(decoded) * 1e6


def summarise_runs(results: list[dict[str, Any]], expected_events: int) -> dict[str, Any]:
    """Figures of repeated :func:`run_mode` runs of one kind, for an A/B table."""
    rates = [r["events_per_s"] for r in results]
    steady = [r["steady_events_per_s"] for r in results]
    return {
        "events_per_s_of_each_run": rates,
        "best": max(rates),
        "median": statistics.median(rates),
        "steady_events_per_s_of_each_run": steady,
        "steady_median": statistics.median(x for x in steady if x is not None),
        "first_event_s_of_each_run": [r["first_event_s"] for r in results],
        "complete_of_each_run": [r["events"] >= expected_events for r in results],
        "peak_rss_mb_of_each_run": [r["peak_rss_mb"] for r in results],
        "worker_cpu_s_of_each_run": [r.get("worker_cpu_s") for r in results],
        "machine_cpu_s_of_each_run": [r.get("machine_cpu_s") for r in results],
    }


def median_ratios(top: dict[str, Any], bottom: dict[str, Any]) -> tuple[float, float]:
    """``top`` over ``bottom`` (:func:`summarise_runs`): whole-run and steady medians."""
    return (
        round(top["median"] / bottom["median"], 3),
        round(top["steady_median"] / bottom["steady_median"], 3),
    )


def run_mode(
    mode: str,
    bootstrap: str,
    prefix: str,
    expected: int,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "APP_ID": f"bench-{mode}-{uuid.uuid4().hex[:6]}",
        "TOPIC_PREFIX": prefix,
        "DATA_DIR": str(workdir / mode),
        "WEB_PORT": str(free_port()),
        "LOG_LEVEL": "warning",
        # Only the open /readyz and /metrics are read, but a worker needs a token.
        "WEB_TOKEN": secrets.token_urlsafe(32),
        # And real keys: a worker refuses the placeholders.
        **throwaway_secrets(),
    }
    if mode == "naive":
        env["BATCH_MAX_EVENTS"] = "1"
        env["WRITE_BACK"] = "false"
    env.update(extra_env or {})
    worker = WorkerProcess(env=env, log_path=workdir / f"{mode}.log").start()
    try:
        worker.wait_ready(180)
        assert worker.proc is not None  # noqa: S101 - started above
        # CPU from ready to done: the worker's own (its threads: RocksDB's
        # included), and the machine's (the broker's and this process's too).
        cpu_at_ready, machine_at_ready = cpu_seconds(worker.proc.pid), machine_cpu_seconds()
        started = time.monotonic()
        done = 0.0
        progress: list[tuple[float, float]] = []  # (seconds since ready, events read)
        while time.monotonic() - started < 1800:
            # Answered between batches: a batch of held events released at once
            # can take seconds.
            _, body = worker.get("/metrics", timeout_s=120)
            text = body.decode()
            done = metric_sum(text, "segstream_events_consumed_total") + metric_sum(
                text, "segstream_dead_letters_total"
            )
            progress.append((time.monotonic() - started, done))
            if done >= expected:
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        worker_cpu = cpu_seconds(worker.proc.pid) - cpu_at_ready
        machine_cpu = machine_cpu_seconds() - machine_at_ready
        rss = peak_rss_mb(worker.proc.pid)
    finally:
        worker.stop()
    return {
        "events": int(done),
        "seconds": round(elapsed, 2),
        "events_per_s": round(done / elapsed, 1),
        **steady_rate(progress, expected),
        "peak_rss_mb": round(rss, 1),
        "store_mb": round(dir_size_mb(workdir / mode), 1),
        "worker_cpu_s": round(worker_cpu, 2),
        "machine_cpu_s": round(machine_cpu, 2),
    }


def steady_rate(progress: list[tuple[float, float]], expected: int) -> dict[str, float | None]:
    """Events/s from the first sample past 10% of the workload to the first past 90%,
    and the seconds to the first event.

    The whole-run rate also counts the start: partition assignment, table
    recovery, the first fetch. The steady rate leaves that out. ``progress``
    holds ``(seconds, events read)`` samples; the rate is the events between
    the two samples over the time between them. A worker answers ``/metrics``
    between batches, so samples come a batch apart (a second or two), and a
    sample's count can pass its threshold by most of a batch: the span is
    measured by the counts seen, not by the thresholds.

    It is coarse all the same: events are counted when read, and a worker
    reads one topic ahead of another and holds what it read until the input
    watermark reaches it (``segstream_events_processed_total`` counts them
    when it does), so the work done within the span is not the events read
    within it.

    >>> steady_rate([(1.0, 0), (2.0, 15), (3.0, 50), (4.0, 95), (5.0, 100)], 100)
    {'steady_events_per_s': 40.0, 'first_event_s': 2.0}
    """
    low, high, first = (reached(progress, share * expected) for share in (0.1, 0.9, 0.0))
    rate = None
    if low is not None and high is not None and progress[high][0] > progress[low][0]:
        (t_low, n_low), (t_high, n_high) = progress[low], progress[high]
        rate = round((n_high - n_low) / (t_high - t_low), 1)
    return {
        "steady_events_per_s": rate,
        "first_event_s": None if first is None else progress[first][0],
    }


def reached(progress: list[tuple[float, float]], events: float) -> int | None:
    """The index of the first sample at or past ``events`` (and past 0)."""
    return next((i for i, (_, n) in enumerate(progress) if n >= events and n > 0), None)


def run_faust_floor(
    bootstrap: str, settings: Settings, expected: int, workdir: Path
) -> dict[str, Any]:
    """Faust's own floor on the same topics: a bare agent that decodes and discards."""
    names = settings.topic_names()
    port = free_port()
    env = dict(
        os.environ,
        FLOOR_BROKER=bootstrap,
        FLOOR_TOPICS=",".join(names[r] for r in ("clickstream", "purchases", "support")),
        FLOOR_APP_ID=f"floor-{uuid.uuid4().hex[:6]}",
        FLOOR_WEB_PORT=str(port),
        FLOOR_TUNED="1",
    )
    with open(workdir / "floor.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "bench.apps.faust_floor", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        started = time.monotonic()
        consumed = 0
        while time.monotonic() - started < 1800 and consumed < expected:
            with urllib.request.urlopen(url + "/count", timeout=5) as response:  # noqa: S310
                consumed = orjson.loads(response.read())["consumed"]
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "events": consumed,
        "seconds": round(elapsed, 2),
        "events_per_s": round(consumed / elapsed, 1),
        "peak_rss_mb": round(rss, 1),
    }


@dataclass
class Workload:
    """A simulator history (seed 99) produced to the input topics of a fresh local broker."""

    events: list[dict[str, Any]]
    workdir: Path
    broker: LocalKafka
    prefix: str
    settings: Settings
    produce_s: float
    name: str = "bench"

    @classmethod
    def produce(cls, customers: int, days: int, name: str) -> Workload:
        events, _ = simulate(
            SimConfig(
                customers=customers, days=days, seed=99, start=datetime(2026, 1, 1, tzinfo=UTC)
            )
        )
        workdir = Path(tempfile.mkdtemp(prefix=f"segstream-{name}-"))
        broker = LocalKafka(home=workdir / "kafka", heap="1g").start()
        workload = cls(events, workdir, broker, "", Settings(_env_file=None), 0.0, name)
        produced_at = time.monotonic()
        workload.prefix = workload.fresh_prefix()
        workload.produce_s = time.monotonic() - produced_at
        workload.settings = Settings(
            _env_file=None, kafka_bootstrap=broker.bootstrap, topic_prefix=workload.prefix
        )
        return workload

    def fresh_prefix(self) -> str:
        """A topic prefix no run has used, its input topics holding the workload.

        Give each run its own: a worker writes to topics a later worker reads
        from the start with its fresh consumer group (re-keyed identity events
        into the clickstream topic, training examples, model snapshots), so a
        later run on shared topics also learns every earlier run's examples
        and reads more input. Seen here: on shared topics, five runs of one
        worker slowed from 5,410 to 3,554 events/s, run after run.
        """
        prefix = f"{self.name}{uuid.uuid4().hex[:6]}."
        settings = Settings(
            _env_file=None, kafka_bootstrap=self.broker.bootstrap, topic_prefix=prefix
        )
        create_topics(settings)
        producer = make_producer(settings, linger_ms=20)
        for _ in send_events(settings, self.events, producer=producer):
            pass
        producer.close()
        return prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=60)
    # naive last: its changelog backlog (compaction, page cache) must not weigh on the others.
    parser.add_argument("--modes", default="faust_floor,batched,naive")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args()

    workload = Workload.produce(args.customers, args.days, "bench")
    events, workdir, broker = workload.events, workload.workdir, workload.broker
    settings, produce_s = workload.settings, workload.produce_s
    try:
        results: dict[str, Any] = {
            "benchmark": "pipeline",
            "machine": describe(),
            "kafka": broker.version,
            "workload": {
                "customers": args.customers,
                "days": args.days,
                "events": len(events),
                "produce_s": round(produce_s, 1),
            },
            "state_update_us_per_event": round(state_update_cost_us(events, settings), 2),
            "modes": {},
        }
        for mode in args.modes.split(","):
            if mode == "faust_floor":
                results["modes"][mode] = run_faust_floor(
                    broker.bootstrap, settings, len(events), workdir
                )
            else:
                # (On topics of its own: see Workload.fresh_prefix.)
                results["modes"][mode] = run_mode(
                    mode, broker.bootstrap, workload.fresh_prefix(), len(events), workdir
                )
            print(mode, results["modes"][mode], flush=True)
        modes = results["modes"]
        if "naive" in modes and "batched" in modes:
            results["batched_over_naive"] = round(
                modes["batched"]["events_per_s"] / modes["naive"]["events_per_s"], 2
            )
        if "faust_floor" in modes and "batched" in modes:
            results["batched_over_faust_floor"] = round(
                modes["batched"]["events_per_s"] / modes["faust_floor"]["events_per_s"], 2
            )
        save_results(results, args.out, echo=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
