"""What one segstream worker costs at a million customers, on the real broker.

    .venv/bin/python -m bench.million_bench [--customers 1000000]
        [--events-per-customer 2] [--out bench/results/million.json]

One run, on a local Kafka broker this script starts in a temporary directory:

1. **Workload.** A light synthetic history, generated directly rather than by
   the simulator (which is far too slow and memory-hungry for a million
   customers): every customer has ``--events-per-customer`` events spread
   uniformly over ``--days`` of event time. They are ``page_view`` clicks,
   except that for a share ``--purchase-share`` of customers the last event
   is an ``order`` on ``purchases``. Events are produced in event-time order,
   keyed exactly as :func:`streams.producer.encode_event` keys them; a sample
   is decoded offline with :func:`schemas.decode.decode_event` first.
2. **Consumption.** One worker (RocksDB store, its own data directory, a
   fresh consumer group) reads everything from the beginning. Throughput is
   events accepted (consumed + dead-lettered, from the worker's ``/metrics``)
   divided by the time from the worker being ready until the last event is
   processed. Also: the worker's peak RSS (``VmHWM``) and the RocksDB store
   size once it has caught up and committed.
3. **Restart with its data directory.** The worker is killed with SIGKILL and
   started again on the same data directory; measured: seconds until
   ``/readyz`` answers 200, and until every profile of a random sample of
   customers is served with exactly the event counts that were produced.
4. **Recovery from the changelog.** That worker is stopped and a fresh one
   starts with an *empty* data directory in the same consumer group, so it
   restores every table from the changelog topics; the same two times.

Peak RSS is reported for all three workers. The machine may be shared, so
the worker's own CPU seconds during consumption and the 1-minute load
average beside it are recorded too (events per worker CPU second does not
depend on what else runs); so are the commit and the uncommitted files of
the tree the worker ran from. Targets from the issue tracker:
worker RSS at most 1.5 GB (read strictly: 1.5e9 bytes, 1,430.5 MiB) and
restart recovery at most 60 s, at 1,000,000 customers; both are reported as
met or missed for each recovery.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.machine import describe, save_results
from bench.pipeline_bench import dir_size_mb, metric_sum, peak_rss_mb
from schemas.decode import DecodeLimits, decode_event
from streams.cli.admin import create_topics
from streams.cli.local_kafka import LocalKafka, free_port
from streams.cli.process import WorkerProcess, WorkerStartError
from streams.producer import encode_event, make_producer
from streams.settings import Settings, throwaway_secrets

RESULTS = Path(__file__).resolve().parent / "results"

TARGET_RSS_MB = 1.5e9 / 2**20
TARGET_RECOVERY_S = 60.0

DAY_MS = 86_400_000
START = datetime(2026, 1, 1, tzinfo=UTC)
CATEGORIES = ("shoes", "books", "garden", "kitchen", "toys", "beauty", "sports", "music")
PAGES = ("home", "category", "search", "deals", "product", "account")


@dataclass
class Workload:
    """A synthetic history: who does what when, as compact arrays.

    Parameters
    ----------
    customers
        Number of customers.
    events_per_customer
        Events of every customer.
    purchase_share
        Share of customers whose last event is an order (needs at least two
        events per customer; with one, every event is a page view).
    days
        Event-time span; event times are uniform over it.
    seed
        Seed of the generator: the same seed gives the same events.
    """

    customers: int
    events_per_customer: int
    purchase_share: float
    days: int
    seed: int
    start_ms: int = field(default=int(START.timestamp() * 1000))
    ts: np.ndarray = field(init=False, repr=False)
    customer: np.ndarray = field(init=False, repr=False)
    rank: np.ndarray = field(init=False, repr=False)
    buyer: np.ndarray = field(init=False, repr=False)
    amount_cents: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n, k = self.customers, self.events_per_customer
        customer = np.repeat(np.arange(n, dtype=np.int32), k)
        ts = self.start_ms + rng.integers(0, self.days * DAY_MS, size=n * k, dtype=np.int64)
        # Sorted by customer, then time: each customer's events get ranks 0..k-1.
        by_customer = np.lexsort((ts, customer))
        customer, ts = customer[by_customer], ts[by_customer]
        rank = np.tile(np.arange(k, dtype=np.int16), n)
        # Then by time, stably: a customer's events stay in rank order on ties.
        by_time = np.argsort(ts, kind="stable")
        self.ts, self.customer, self.rank = ts[by_time], customer[by_time], rank[by_time]
        self.buyer = (rng.random(n) < self.purchase_share) & (k >= 2)
        self.amount_cents = rng.integers(500, 25_000, size=n, dtype=np.int64)

    @property
    def total(self) -> int:
        """Number of events."""
        return int(self.ts.size)

    @staticmethod
    def customer_id(index: int) -> str:
        """The id of customer number ``index``."""
        return f"c{index:07d}"

    def event(self, i: int) -> dict[str, Any]:
        """The ``i``-th event in event-time order, with its ``"topic"`` role."""
        c, r, ts = int(self.customer[i]), int(self.rank[i]), int(self.ts[i])
        cid = self.customer_id(c)
        if self.buyer[c] and r == self.events_per_customer - 1:
            cents = int(self.amount_cents[c])
            return {
                "topic": "purchases",
                "schema_version": 1,
                "event_id": f"e{c:07d}-{r}",
                "customer_id": cid,
                "ts": ts,
                "type": "order",
                "order_id": f"o{c:07d}-1",
                "amount": cents / 100,
                "currency": "EUR",
                "items": [
                    {
                        "sku": f"p{c % 5000:04d}",
                        "category": CATEGORIES[c % len(CATEGORIES)],
                        "qty": 1,
                        "unit_price": cents / 100,
                    }
                ],
                "channel": "web",
            }
        return {
            "topic": "clickstream",
            "schema_version": 1,
            "event_id": f"e{c:07d}-{r}",
            "customer_id": cid,
            "ts": ts,
            "type": "page_view",
            "session_id": f"s{c:07d}-{r}",
            "channel": "web",
            "page": PAGES[(c + r) % len(PAGES)],
            "duration_ms": 1_500 + (c * 7919 + r * 104_729) % 60_000,
        }

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event, in event-time order."""
        for i in range(self.total):
            yield self.event(i)

    def expected_counts(self, index: int) -> dict[str, int]:
        """The ``event_counts`` the profile of customer ``index`` must show."""
        k = self.events_per_customer
        if self.buyer[index]:
            counts = {"purchases.order": 1}
            if k > 1:
                counts["clickstream.page_view"] = k - 1
            return counts
        return {"clickstream.page_view": k}


def verify_sample(workload: Workload, size: int, seed: int) -> int:
    """Decode a random sample of the workload offline, as a worker would.

    Returns
    -------
    int
        Number of events checked.

    Raises
    ------
    DecodeError
        If any sampled event is not accepted.
    """
    rng = np.random.default_rng(seed)
    picks = rng.choice(workload.total, size=min(size, workload.total), replace=False)
    limits = DecodeLimits()
    now = time.time_ns() // 1_000_000
    for i in picks:
        role, key, value = encode_event(workload.event(int(i)))
        decode_event(role, key, value, limits, now)
    return len(picks)


def produce(settings: Settings, workload: Workload) -> float:
    """Send the workload to the input topics; returns the seconds it took."""
    names = settings.topic_names()
    producer = make_producer(settings, linger_ms=50, batch_size=1024 * 1024)
    started = time.monotonic()
    try:
        for count, event in enumerate(workload.events(), 1):
            role, key, value = encode_event(event)
            producer.send(names[role], key=key, value=value)
            if count % 250_000 == 0:
                rate = count / (time.monotonic() - started)
                print(f"produced {count:,} events ({rate:,.0f}/s)", flush=True)
        producer.flush()
    finally:
        producer.close()
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    """Current resident set size of a process, MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accepted(worker: WorkerProcess) -> float:
    """Events the worker accepted so far: consumed plus dead-lettered."""
    _, body = worker.get("/metrics", timeout_s=10)
    text = body.decode()
    return metric_sum(text, "segstream_events_consumed_total") + metric_sum(
        text, "segstream_dead_letters_total"
    )


def wait_ready(worker: WorkerProcess, timeout_s: float) -> float:
    """Seconds until ``/readyz`` answers 200, counted from now.

    Raises
    ------
    WorkerStartError
        If the worker exits or is not ready within ``timeout_s``.
    """
    started = time.monotonic()
    worker.wait_ready(timeout_s)
    return time.monotonic() - started


def profile_mismatches(worker: WorkerProcess, workload: Workload, sample: list[int]) -> list[str]:
    """Sampled customers whose served profile differs from the produced events."""
    wrong = []
    for index in sample:
        cid = workload.customer_id(index)
        try:
            status, body = worker.get(f"/customers/{cid}", timeout_s=10)
        except OSError as exc:
            wrong.append(f"{cid}: {exc}")
            continue
        if status != 200:
            wrong.append(f"{cid}: HTTP {status}")
            continue
        counts = orjson.loads(body).get("event_counts")
        if counts != workload.expected_counts(index):
            wrong.append(f"{cid}: {counts}")
    return wrong


def wait_profiles(
    worker: WorkerProcess, workload: Workload, sample: list[int], timeout_s: float
) -> tuple[bool, list[str]]:
    """Poll the sample until every profile is right; ``(all_right, last_mismatches)``."""
    deadline = time.monotonic() + timeout_s
    wrong = profile_mismatches(worker, workload, sample)
    while wrong and time.monotonic() < deadline:
        time.sleep(0.2)
        wrong = profile_mismatches(worker, workload, sample)
    return not wrong, wrong


def topic_mb(broker_home: Path, prefix: str) -> float:
    """Disk used on the broker by the partitions of topics named ``prefix*``."""
    logs = broker_home / "logs"
    return sum(dir_size_mb(d) for d in logs.glob(f"{prefix}*-*") if d.is_dir())


def recovery(
    label: str,
    worker: WorkerProcess,
    workload: Workload,
    sample: list[int],
    timeout_s: float,
) -> dict[str, Any]:
    """Start ``worker``; time readiness and correct profiles; its RSS and store.

    A worker that is not ready within ``timeout_s`` is recorded as such
    (``ready_s`` is ``None``) rather than ending the benchmark.
    """
    # Others may commit to the tree meanwhile: name the code this worker loads.
    commit = source_state()["commit"]
    started = time.monotonic()
    worker.start()
    assert worker.proc is not None  # noqa: S101 - started above
    result: dict[str, Any] = {
        "source_commit": commit,
        "sample_customers": len(sample),
        "target_recovery_s": TARGET_RECOVERY_S,
        "target_rss_mb": round(TARGET_RSS_MB, 1),
    }
    try:
        worker.wait_ready(timeout_s)
    except WorkerStartError as exc:
        result.update(
            ready_s=None,
            profiles_served_s=None,
            sample_correct=False,
            error=str(exc).splitlines()[0],
            recovery_target_met=False,
        )
    else:
        result["ready_s"] = round(time.monotonic() - started, 2)
        ok, wrong = wait_profiles(worker, workload, sample, timeout_s)
        served_at = time.monotonic() - started
        result.update(
            profiles_served_s=round(served_at, 2),
            sample_correct=ok,
            sample_mismatches=wrong[:5],
            recovery_target_met=ok and served_at <= TARGET_RECOVERY_S,
        )
    result["peak_rss_mb"] = round(peak_rss_mb(worker.proc.pid), 1) if worker.alive() else None
    result["rss_target_met"] = (
        result["peak_rss_mb"] is not None and result["peak_rss_mb"] <= TARGET_RSS_MB
    )
    result["store_mb"] = round(dir_size_mb(Path(worker.env["DATA_DIR"])), 1)
    print(label, result, flush=True)
    return result


def source_state() -> dict[str, Any]:
    """The commit the worker code is at, and the files changed since (a shared tree)."""

    def git(*argv: str) -> str:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", *argv],  # noqa: S607 - git from PATH, as a developer runs it
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
        return out.stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_files": sorted(changed)}


def main() -> None:
    """Run the benchmark and write its JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events-per-customer", type=int, default=2)
    parser.add_argument("--purchase-share", type=float, default=0.3)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sample", type=int, default=200, help="Profiles checked per check.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="Consumption limit, s.")
    parser.add_argument("--out", type=Path, default=RESULTS / "million.json")
    parser.add_argument("--log-level", default="info", help="Log level of the workers.")
    parser.add_argument("--keep-logs", type=Path, help="Copy the worker and broker logs here.")
    args = parser.parse_args()
    if args.events_per_customer < 1 or args.customers < 1:
        parser.error("--customers and --events-per-customer must be at least 1")

    began = time.monotonic()
    generated_at = time.monotonic()
    workload = Workload(
        args.customers, args.events_per_customer, args.purchase_share, args.days, args.seed
    )
    generate_s = time.monotonic() - generated_at
    checked = verify_sample(workload, 5000, args.seed)
    print(f"generated {workload.total:,} events in {generate_s:.1f}s; {checked} decode", flush=True)
    rng = np.random.default_rng(args.seed + 1)
    sample = sorted(
        int(i) for i in rng.choice(args.customers, min(args.sample, args.customers), replace=False)
    )

    workdir = Path(tempfile.mkdtemp(prefix="segstream-million-"))
    broker = LocalKafka(home=workdir / "kafka", heap="1g").start()
    workers: list[WorkerProcess] = []
    try:
        prefix = f"million{uuid.uuid4().hex[:6]}."
        app_id = f"million-{uuid.uuid4().hex[:6]}"
        settings = Settings(
            _env_file=None,
            kafka_bootstrap=broker.bootstrap,
            topic_prefix=prefix,
            input_partitions=args.partitions,
        )
        create_topics(settings)
        produce_s = produce(settings, workload)
        print(f"produced {workload.total:,} events in {produce_s:.1f}s", flush=True)

        env = {
            "KAFKA_BOOTSTRAP": broker.bootstrap,
            "APP_ID": app_id,
            "TOPIC_PREFIX": prefix,
            "INPUT_PARTITIONS": str(args.partitions),
            "STORE": "rocksdb",
            "DATA_DIR": str(workdir / "worker"),
            "WEB_PORT": str(free_port()),
            "LOG_LEVEL": args.log_level,
            # Profiles are read with it; a worker refuses to start without one.
            "WEB_TOKEN": secrets.token_urlsafe(32),
            # And real keys: a worker refuses the placeholders.
            **throwaway_secrets(),
        }
        results: dict[str, Any] = {
            "benchmark": "million",
            "machine": describe(),
            "kafka": broker.version,
            "source": source_state(),
            "parameters": {
                "customers": args.customers,
                "events_per_customer": args.events_per_customer,
                "purchase_share": args.purchase_share,
                "days": args.days,
                "input_partitions": args.partitions,
                "store": "rocksdb",
                "sample_customers": len(sample),
                "seed": args.seed,
                "worker_log_level": args.log_level,
            },
            "workload": {
                "events": workload.total,
                "orders": int(workload.buyer.sum()),
                "generate_s": round(generate_s, 1),
                "decoded_sample": checked,
                "produce_s": round(produce_s, 1),
                "produce_events_per_s": round(workload.total / produce_s, 1),
                "input_topics_mb": round(topic_mb(broker.home, prefix), 1),
            },
        }

        # -- consumption ----------------------------------------------------------------
        first = WorkerProcess(env=dict(env), log_path=workdir / "worker-1.log")
        workers.append(first)
        first.start()
        startup_s = wait_ready(first, 300)
        assert first.proc is not None  # noqa: S101 - started above
        started = time.monotonic()
        cpu_at_ready = cpu_seconds(first.proc.pid)
        done = 0.0
        progress: list[dict[str, float]] = []
        loads: list[float] = []
        last_report = started
        while time.monotonic() - started < args.timeout:
            done = accepted(first)
            if done >= workload.total:
                break
            now = time.monotonic()
            if now - last_report >= 30:
                last_report = now
                loads.append(os.getloadavg()[0])
                point = {
                    "s": round(now - started, 1),
                    "events": int(done),
                    "rss_mb": round(rss_mb(first.proc.pid), 1),
                    "worker_cpu_s": round(cpu_seconds(first.proc.pid) - cpu_at_ready, 1),
                    "load1": round(loads[-1], 2),
                }
                progress.append(point)
                print("consuming", point, flush=True)
            # Once a second: a /metrics scrape costs the worker CPU too.
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        consume_cpu = cpu_seconds(first.proc.pid) - cpu_at_ready
        consume_rss = peak_rss_mb(first.proc.pid)
        _, body = first.get("/metrics", timeout_s=10)
        metrics = body.decode()
        # Let offset commits (and with them the write-back cache) reach the changelog.
        time.sleep(15)
        served_ok = profile_mismatches(first, workload, sample)
        consumption = {
            "startup_ready_s": round(startup_s, 2),
            "events": int(done),
            "complete": done >= workload.total,
            "seconds": round(elapsed, 2),
            "events_per_s": round(done / elapsed, 1),
            # The machine is shared: CPU the worker got, and the load beside it.
            "worker_cpu_s": round(consume_cpu, 1),
            "events_per_worker_cpu_s": round(done / consume_cpu, 1) if consume_cpu else None,
            "mean_load1": round(sum(loads) / len(loads), 2) if loads else None,
            "metrics_bytes": len(metrics),
            "dead_letters": int(metric_sum(metrics, "segstream_dead_letters_total")),
            "duplicates": int(metric_sum(metrics, "segstream_duplicate_events_total")),
            "late_events": int(metric_sum(metrics, "segstream_late_events_total")),
            "peak_rss_mb": round(consume_rss, 1),
            "peak_rss_mb_after_settling": round(peak_rss_mb(first.proc.pid), 1),
            "store_mb": round(dir_size_mb(workdir / "worker"), 1),
            "changelog_topics_mb": round(topic_mb(broker.home, app_id), 1),
            "sample_correct": not served_ok,
            "sample_mismatches": served_ok[:5],
            "target_rss_mb": round(TARGET_RSS_MB, 1),
            "rss_target_met": consume_rss <= TARGET_RSS_MB,
            "progress": progress,
        }
        results["consumption"] = consumption
        save_results(results, args.out)  # so far: every phase adds to them
        print("consumption", {k: v for k, v in consumption.items() if k != "progress"}, flush=True)

        # -- (a) kill -9, restart on the same data directory -------------------------
        first.kill()
        restarted = WorkerProcess(env=dict(env), log_path=workdir / "worker-2.log")
        workers.append(restarted)
        results["restart_same_data_dir"] = recovery(
            "restart_same_data_dir", restarted, workload, sample, 1800
        )
        save_results(results, args.out)  # so far: every phase adds to them
        restarted.stop()

        # -- (b) a fresh worker with an empty data directory, same group -------------
        fresh_env = dict(env, DATA_DIR=str(workdir / "worker-fresh"))
        fresh = WorkerProcess(env=fresh_env, log_path=workdir / "worker-3.log")
        workers.append(fresh)
        results["recovery_empty_data_dir"] = recovery(
            "recovery_empty_data_dir", fresh, workload, sample, 3600
        )
        results["changelog_topics_mb_after"] = round(topic_mb(broker.home, app_id), 1)
        fresh.stop()

        rss_all = [
            consumption["peak_rss_mb"],
            results["restart_same_data_dir"]["peak_rss_mb"] or float("inf"),
            results["recovery_empty_data_dir"]["peak_rss_mb"] or float("inf"),
        ]
        results["targets"] = {
            "rss_mb": round(TARGET_RSS_MB, 1),
            "rss_met": max(rss_all) <= TARGET_RSS_MB,
            "recovery_s": TARGET_RECOVERY_S,
            "restart_same_data_dir_met": results["restart_same_data_dir"]["recovery_target_met"],
            "recovery_empty_data_dir_met": results["recovery_empty_data_dir"][
                "recovery_target_met"
            ],
        }
        results["total_s"] = round(time.monotonic() - began, 1)
        save_results(results, args.out)  # so far: every phase adds to them
        print_summary(results)
    except BaseException:
        for worker in workers:
            print(f"--- {worker.log_path.name}\n{worker.tail_log(30)}", flush=True)
        raise
    finally:
        for worker in workers:
            worker.kill()
        broker.stop()
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in [*workdir.glob("worker-*.log"), workdir / "kafka" / "server.log"]:
                if log.exists():
                    shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


def print_summary(results: dict[str, Any]) -> None:
    """A few lines a person can read."""
    p, w, c = results["parameters"], results["workload"], results["consumption"]
    a, b = results["restart_same_data_dir"], results["recovery_empty_data_dir"]
    t = results["targets"]

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        f"\n{p['customers']:,} customers, {w['events']:,} events "
        f"(produced in {w['produce_s']} s)\n"
        f"consumption: {c['events_per_s']:,} events/s over {c['seconds']} s, "
        f"peak RSS {c['peak_rss_mb']} MiB, RocksDB store {c['store_mb']} MiB, "
        f"changelogs {c['changelog_topics_mb']} MiB\n"
        f"restart (kill -9, same data dir): ready {a['ready_s']} s, profiles served "
        f"{a['profiles_served_s']} s, peak RSS {a['peak_rss_mb']} MiB\n"
        f"recovery (empty data dir, from changelogs): ready {b['ready_s']} s, profiles "
        f"served {b['profiles_served_s']} s, peak RSS {b['peak_rss_mb']} MiB\n"
        f"targets: RSS <= {t['rss_mb']} MiB {met(t['rss_met'])}; recovery <= "
        f"{t['recovery_s']:.0f} s: restart {met(t['restart_same_data_dir_met'])}, "
        f"from changelog {met(t['recovery_empty_data_dir_met'])}",
        flush=True,
    )


if __name__ == "__main__":
    main()
