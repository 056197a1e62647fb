"""segstream against its peers: throughput, memory and end-to-end latency.

    .venv/bin/python -m bench.compare_bench [--customers 1000] [--days 60]
        [--out bench/results/compare.json]

One run, on a local Kafka broker this script starts, on one pre-produced
simulator workload (all three input topics, the simulator's realistic mix,
4 partitions each). Every configuration reads the same topics from the
beginning with a fresh consumer group and fresh state:

* ``a_aiokafka_ceiling`` — a raw aiokafka consumer that decodes each value
  with orjson and discards it (``bench/apps/aiokafka_ceiling.py``): the most
  Python can consume here;
* ``b_faust_floor`` — a bare Faust agent that decodes and discards
  (``bench/apps/faust_floor.py``, segstream's consumer tuning): the most any
  Faust app can do here;
* ``c_quix_streams`` — a Quix Streams 3.28.1 app counting events per key in
  its RocksDB state (``bench/apps/quix_count.py``). Quix Streams is installed
  only into the benchmark's own virtualenv, ``var/bench-peers-venv``, built
  from ``bench/requirements-peers.txt`` by this script, and the app runs as a
  subprocess of that interpreter;
* ``d_segstream_1_worker`` — segstream's full pipeline, one ``segstream
  worker`` (:class:`streams.cli.process.WorkerProcess`), default settings;
* ``e_segstream_2_workers`` — two workers in one consumer group sharing the
  4 input partitions.

**Throughput** is events processed divided by the time from the consumer
being ready until the last event is processed. The peer apps count in
process and print their count and time (a, c) or answer ``/count`` (b); for
segstream the harness polls each worker's ``/metrics`` (events consumed plus
dead letters) from the moment every worker answers ``/readyz`` and subtracts
what was processed before that moment (the first of two workers can start
before the second has joined). A segstream worker also consumes the events
it re-issues when an anonymous visitor identifies, so its expected total is
what the input topics hold plus those (computed offline with the same
``apply_anonymous``). Those re-issued events stay on the clickstream topic,
so every run counts the input topics' records afresh (their end offsets)
rather than assuming the original workload. Workers run with segstream's
default settings, log level included. **Peak RSS** is each process's VmHWM,
read while it is still alive; for (e) each worker's. Each configuration runs
``--repeats`` times (in passes over all five, each run with a fresh group
and state) and the fastest run is reported — the one least disturbed by
other work on a shared machine — with every run's rate beside it. A run
whose worker crashes is retried afresh and the crash is recorded
(``failed_attempts``).

**Latency** (end to end, produce → segment change published) is measured
for segstream with one worker at a fixed offered load of
``--latency-load`` (50%) of (d)'s measured maximum, on a fresh workload
(another seed, new topic prefix, new consumer group, fresh worker). A
kafka-python producer (segstream's ``make_producer``: acks=all, linger 5 ms)
sends events at that constant rate for ``--latency-seconds`` and records
each event's wall-clock send time under ``(customer_id, event ts)``.
Afterwards the segment-changes topic is read from the beginning. Segments are
decided at the event times of the events that trigger a decision, or at
deadlines fired by the watermark, so a change whose ``ts`` equals an event's
``ts`` for the same customer was caused by that event; changes with no such
event (deadline-driven, or caused by a re-issued anonymous event whose
customer was unknown at send time) are excluded and counted. Latency is the
change record's Kafka timestamp (producer create time, ms, stamped by the
worker's producer) minus the event's send time; where one customer has two
events at the same ``ts`` the earlier send time is used, which can only
overstate latency. Producer and worker share this machine's clock, and the
load generator's CPU use counts against the worker on 2 cores. The result
also has p50/p99 per 5-second window of send time, which shows whether a
backlog built up (the per-event cost is not uniform over a history: the
first weeks, when every customer is new, cost more than the average).

**Profile.** After (d), a second single worker on a fresh group reads the
same workload while ``py-spy record --nonblocking`` samples it for
``--profile-seconds``; the JSON summarises where the samples fall (by
package and by function). It is a separate run so that sampling does not
distort (d)'s figure.

Before measuring, the script waits (up to ``--max-load-wait-s``) until the
1-minute load average is below ``--max-load``, and again (up to
``--max-load-wait-per-config-s``) before each configuration, so other work
on the machine
does not distort the figures; the load averages at start and end, and at
the start of each configuration, are recorded with the results and with
:func:`bench.machine.describe`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition

from bench.machine import describe, save_results
from bench.pipeline_bench import dir_size_mb, metric_sum, peak_rss_mb, run_faust_floor
from models.identity import apply_anonymous
from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time
from streams.cli.admin import create_topics
from streams.cli.local_kafka import LocalKafka, free_port
from streams.cli.process import WorkerProcess
from streams.producer import encode_event, make_consumer, make_producer, send_events
from streams.settings import Settings, throwaway_secrets

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PEERS_REQUIREMENTS = REPO / "bench" / "requirements-peers.txt"
PEERS_VENV = REPO / "var" / "bench-peers-venv"
INPUT_ROLES = ("clickstream", "purchases", "support")
THROUGHPUT_SEED = 99
LATENCY_SEED = 100
RUN_TIMEOUT_S = 1800.0
STALL_S = 60.0  # no progress for this long: a worker has stalled

# The targets; a ratio target is met at or above, latency at or below.
TARGETS: dict[str, tuple[str, float]] = {
    "d_over_b": (">=", 0.7),
    "d_over_c": (">=", 1.0),
    "e_over_d": (">=", 1.7),
    "latency_p99_ms": ("<=", 100.0),
}


class BenchError(RuntimeError):
    """A configuration of the benchmark could not be measured."""


@dataclass(frozen=True)
class Workload:
    """Simulated events and what a consumer of them is expected to process.

    Attributes
    ----------
    events
        Simulator events in event-time order, each with its ``"topic"`` role.
    reissued
        Events a segstream worker re-issues to the clickstream topic when an
        anonymous visitor identifies (it consumes them too).
    """

    events: list[dict[str, Any]]
    reissued: int

    @property
    def segstream_expected(self) -> int:
        return len(self.events) + self.reissued


def make_workload(
    customers: int, days: int, seed: int, anonymous_capacity: int, limit: int | None = None
) -> Workload:
    """Simulate a workload (its first ``limit`` events if given) and count re-issues."""
    events, _ = simulate(
        SimConfig(customers=customers, days=days, seed=seed, start=datetime(2026, 1, 1, tzinfo=UTC))
    )
    events = events[:limit] if limit is not None else events
    return Workload(events, reissued_events(events, anonymous_capacity))


def reissued_events(events: Iterable[dict[str, Any]], capacity: int) -> int:
    """How many events a worker re-issues under a customer id (identity stitching).

    Examples
    --------
    >>> anonymous = {"type": "page_view", "anonymous_id": "a1", "ts": 1}
    >>> identify = {"type": "identify", "anonymous_id": "a1", "customer_id": "c1", "ts": 2}
    >>> reissued_events([anonymous, anonymous, identify, anonymous], capacity=200)
    3
    """
    identities: dict[str, Any] = {}
    total = 0
    for event in events:
        if "malformed" in event or event.get("topic", "clickstream") != "clickstream":
            continue
        if event.get("customer_id") is not None and event.get("type") != "identify":
            continue
        anonymous_id = str(event["anonymous_id"])
        identities[anonymous_id], released, _ = apply_anonymous(
            identities.get(anonymous_id), event, capacity
        )
        total += len(released)
    return total


# --- Environment -------------------------------------------------------------


def ensure_peers_venv() -> Path:
    """The peers' interpreter, from ``bench/requirements-peers.txt`` (built when needed)."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".requirements.sha256"
    wanted = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"building {PEERS_VENV} from {PEERS_REQUIREMENTS.name}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603 - fixed argv, no shell
        [str(python), "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)], check=True
    )
    marker.write_text(wanted)
    return python


def load_1m() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (or time runs out)."""
    started = time.monotonic()
    while load_1m() >= max_load and time.monotonic() - started < timeout_s:
        print(f"load_1m={load_1m()} >= {max_load}; waiting", flush=True)
        time.sleep(poll_s)
    return {
        "load_wait_s": round(time.monotonic() - started),
        "quiet": load_1m() < max_load,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- Peer apps -----------------------------------------------------------------


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_peer_app(
    argv: list[str], expected: int, log_path: Path, timeout_s: float = RUN_TIMEOUT_S
) -> dict[str, Any]:
    """Run an app that prints ``{"events", "seconds"}`` once done; add its peak RSS."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv built by this module
            argv,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None and proc.stdin is not None  # noqa: S101 - piped above
    deadline = time.monotonic() + timeout_s
    result: dict[str, Any] | None = None
    try:
        while result is None:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
            if not ready:
                raise BenchError(f"{argv[2]} did not finish in {timeout_s:.0f}s:\n{tail(log_path)}")
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"{argv[2]} exited early:\n{tail(log_path)}")
            if line.startswith(b"{"):
                result = orjson.loads(line)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "events": result["events"],
        "seconds": round(result["seconds"], 2),
        "events_per_s": round(result["events"] / result["seconds"], 1),
        "peak_rss_mb": round(rss, 1),
    }


def run_aiokafka_ceiling(
    bootstrap: str, topics: list[str], expected: int, workdir: Path
) -> dict[str, Any]:
    """(a) The raw aiokafka consumer with orjson decoding."""
    argv = [sys.executable, "-m", "bench.apps.aiokafka_ceiling", "--bootstrap", bootstrap]
    argv += ["--topics", ",".join(topics), "--expected", str(expected)]
    return run_peer_app(argv, expected, workdir / "aiokafka.log")


def run_quix(
    python: Path, bootstrap: str, topics: list[str], expected: int, workdir: Path
) -> dict[str, Any]:
    """(c) The Quix Streams per-key counter, in the peers' virtualenv."""
    state_dir = workdir / "quix-state"
    argv = [str(python), "-m", "bench.apps.quix_count", "--bootstrap", bootstrap]
    argv += ["--topics", ",".join(topics), "--expected", str(expected)]
    argv += ["--group", f"quix-{uuid.uuid4().hex[:6]}", "--state-dir", str(state_dir)]
    result = run_peer_app(argv, expected, workdir / "quix.log")
    result["store_mb"] = round(dir_size_mb(state_dir), 1)
    return result


def run_floor(bootstrap: str, settings: Settings, expected: int, workdir: Path) -> dict[str, Any]:
    """(b) The bare Faust agent (``bench.pipeline_bench.run_faust_floor``).

    Faust puts the app's data directory in the working directory; the one
    this run leaves there is removed.
    """
    before = set(Path.cwd().glob("floor-*-data"))
    try:
        return run_faust_floor(bootstrap, settings, expected, workdir)
    finally:
        for leftover in set(Path.cwd().glob("floor-*-data")) - before:
            shutil.rmtree(leftover, ignore_errors=True)


# --- segstream -------------------------------------------------------------------


def start_workers(
    count: int, bootstrap: str, prefix: str, workdir: Path, name: str
) -> list[WorkerProcess]:
    """Start ``count`` segstream workers in one fresh consumer group."""
    run_id = uuid.uuid4().hex[:6]
    app_id = f"cmp-{name}-{run_id}"
    token = secrets.token_urlsafe(32)  # required by a worker; shared like a deployment's
    keys = throwaway_secrets()  # likewise: a worker refuses the placeholders
    workers = []
    for index in range(count):
        env = {
            "KAFKA_BOOTSTRAP": bootstrap,
            "APP_ID": app_id,
            "TOPIC_PREFIX": prefix,
            "INPUT_PARTITIONS": "4",
            "DATA_DIR": str(workdir / f"{name}-{run_id}-{index}"),
            "WEB_PORT": str(free_port()),
            # LOG_LEVEL stays at its default (info). At warning, Faust's worker
            # sets the root logger to DEBUG to drive its terminal spinner, and
            # every aiokafka debug call then builds a log record.
            "WEB_TOKEN": token,
            **keys,
        }
        log_path = workdir / f"{name}-{run_id}-{index}.log"
        workers.append(WorkerProcess(env=env, log_path=log_path).start())
    return workers


def crash_reason(worker: WorkerProcess) -> str:
    """The first error line of a worker's log: why it exited."""
    if worker.log_path.exists():
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if "Crashed reason=" in line or "[CRITICAL]" in line:
                return line.strip()[:400]
    return "no error line in the log"


def worker_exited(worker: WorkerProcess) -> BenchError:
    return BenchError(f"worker exited: {crash_reason(worker)}\n{worker.tail_log()}")


def wait_all_ready(workers: list[WorkerProcess], timeout_s: float = 180.0) -> None:
    """Block until every worker answers ``/readyz`` with 200 in the same round."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            if not worker.alive():
                raise worker_exited(worker)
        try:
            if all(worker.get("/readyz", timeout_s=2.0)[0] == 200 for worker in workers):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"workers not ready in {timeout_s:.0f}s:\n{workers[0].tail_log()}")


def processed(worker: WorkerProcess, attempts: int = 5) -> float:
    """Events a worker has accepted so far: consumed plus dead-lettered."""
    for attempt in range(attempts):
        if not worker.alive():
            raise worker_exited(worker)
        try:
            _, body = worker.get("/metrics", timeout_s=10)
        except OSError:
            # A busy worker can drop a request; a dead one is caught above.
            time.sleep(0.5 * (attempt + 1))
            continue
        text = body.decode()
        return metric_sum(text, "segstream_events_consumed_total") + metric_sum(
            text, "segstream_dead_letters_total"
        )
    raise BenchError(f"worker does not answer /metrics:\n{worker.tail_log()}")


def wait_processed(
    workers: list[WorkerProcess],
    expected: int,
    timeout_s: float = RUN_TIMEOUT_S,
    stall_s: float = STALL_S,
) -> tuple[list[float], float]:
    """Poll until the workers together have processed ``expected``.

    Gives up when the count has not moved for ``stall_s`` (a stalled worker).
    Returns the per-worker counts and the monotonic time of the last progress.
    """
    deadline = time.monotonic() + timeout_s
    counts = [processed(worker) for worker in workers]
    progressed_at = time.monotonic()
    while sum(counts) < expected and time.monotonic() < deadline:
        if time.monotonic() - progressed_at > stall_s:
            print(f"no progress for {stall_s:.0f}s at {sum(counts):.0f}/{expected}", flush=True)
            break
        time.sleep(0.25)
        previous, counts = sum(counts), [processed(worker) for worker in workers]
        if sum(counts) > previous:
            progressed_at = time.monotonic()
    return counts, progressed_at


def stop_all(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.stop()


def run_segstream(
    count: int, bootstrap: str, prefix: str, expected: int, workdir: Path
) -> dict[str, Any]:
    """(d)/(e) ``count`` segstream workers on the workload, from ready to the last event."""
    workers = start_workers(count, bootstrap, prefix, workdir, f"seg{count}")
    try:
        wait_all_ready(workers)
        started = time.monotonic()
        at_ready = sum(processed(worker) for worker in workers)
        counts, progressed_at = wait_processed(workers, expected)
        elapsed = progressed_at - started
        rss = [peak_rss_mb(worker.proc.pid) for worker in workers if worker.proc is not None]
    finally:
        stop_all(workers)
    done = sum(counts)
    result: dict[str, Any] = {
        "events": int(done),
        "complete": done >= expected,
        "processed_before_ready": int(at_ready),
        "seconds": round(elapsed, 2),
        "events_per_s": round((done - at_ready) / elapsed, 1),
        "peak_rss_mb": round(rss[0], 1) if count == 1 else [round(mb, 1) for mb in rss],
        "store_mb": round(sum(dir_size_mb(Path(w.env["DATA_DIR"])) for w in workers), 1),
    }
    if done < expected:
        # Stalled: the rate is up to the last progress; the run is flagged.
        result["stalled_short_by"] = int(expected - done)
    if count > 1:
        result["events_per_worker"] = [int(c) for c in counts]
    return result


# --- Profile ---------------------------------------------------------------------


def profile_worker(
    py_spy: Path,
    bootstrap: str,
    prefix: str,
    seconds: int,
    workdir: Path,
    keep_raw: Path | None = None,
) -> dict[str, Any]:
    """py-spy samples of one segstream worker reading the workload, summarised."""
    workers = start_workers(1, bootstrap, prefix, workdir, "profile")
    worker = workers[0]
    raw = workdir / f"profile-{uuid.uuid4().hex[:6]}.txt"
    try:
        wait_all_ready(workers)
        assert worker.proc is not None  # noqa: S101 - started above
        at_ready = processed(worker)
        argv = [str(py_spy), "record", "--nonblocking", "--format", "raw", "-r", "100"]
        argv += ["-d", str(seconds), "-p", str(worker.proc.pid), "-o", str(raw)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if not worker.alive():
            raise worker_exited(worker)
        sampled = processed(worker) - at_ready
        if done.returncode != 0 or not raw.exists():
            return {"error": (done.stderr or done.stdout)[-500:]}
    finally:
        stop_all(workers)
    if keep_raw is not None:
        shutil.copyfile(raw, keep_raw)
    summary = summarise_profile(raw.read_text().splitlines())
    # py-spy --nonblocking still costs the worker some CPU: not (d)'s figure.
    summary["events_per_s_while_sampled"] = round(sampled / seconds, 1)
    return summary


# Packages whose frames own a sample; anything else (asyncio, selectors,
# logging, ...) is the standard library, charged to the frame that called it.
# The entry frames that run the two event loops (main and Faust's consumer
# thread) own nothing.
ENTRY_FRAMES = (
    "(streams/cli/",
    "(mode/worker.py",
    "ServiceThread._start_thread (mode/",
    "WorkerThread.run (mode/",
)
OWNERS = (
    "models",
    "schemas",
    "streams",
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "prometheus_client",
    "rocksdict",
    "river",
    "aiohttp",
    "msgspec",
    "orjson",
)
# Where a sample's stack passes through these, the time is (partly) theirs.
MARKERS = {
    "segstream update_customer (profile, models, segments)": "(models/pipeline.py",
    "segstream segment decisions": "(models/segments.py",
    "segstream decode": "(schemas/decode.py",
    "segstream batch loop (_process_batch)": "_process_batch (streams/agents.py",
    "Faust consumer: fetch and drain to streams": "(faust/transport/consumer.py",
    "Faust stream iteration": "(faust/streams.py",
    "Faust producer buffer (send_soon)": "(faust/transport/producer.py",
    "aiokafka producer: build and send produce requests": "(aiokafka/producer/",
    "Faust Prometheus sensor": "(faust/sensors/",
    "prometheus_client": "(prometheus_client/",
    "logging": "(logging/",
    "state cache flush / table writes": "(streams/state_cache.py",
    "RocksDB store": "(faust/stores/",
}


def frame_path(frame: str) -> str:
    """The file of a py-spy frame ``"func (path:line)"``.

    py-spy shortens paths to the part below their ``sys.path`` entry.

    Examples
    --------
    >>> frame_path("update_customer (models/pipeline.py:120)")
    'models/pipeline.py'
    """
    return frame.rsplit("(", 1)[-1].rstrip(")").rsplit(":", 1)[0]


def sample_owner(frames: list[str]) -> str:
    """The package of the innermost non-stdlib frame of a stack (root first).

    Examples
    --------
    >>> sample_owner(
    ...     ["worker (streams/cli/commands.py:10)", "update_customer (models/pipeline.py:120)"]
    ... )
    'segstream models/'
    >>> sample_owner(["send (aiokafka/conn.py:5)", "write (asyncio/selector_events.py:9)"])
    'aiokafka'
    >>> sample_owner(["execute (mode/worker.py:1)", "select (selectors.py:468)"])
    'event loop / stdlib only'
    """
    for frame in reversed(frames):
        top = frame_path(frame).split("/", 1)[0]
        if top in OWNERS and not any(entry in frame for entry in ENTRY_FRAMES):
            return f"segstream {top}/" if top in ("models", "schemas", "streams") else top
    return "event loop / stdlib only"


def summarise_profile(lines: list[str], top: int = 10) -> dict[str, Any]:
    """Where the on-CPU samples of py-spy's raw output fall.

    ``pct_by_owner`` charges each sample to the innermost frame of a
    non-stdlib package (a socket write made by aiokafka is aiokafka's);
    ``pct_self_by_function`` to the innermost frame itself;
    ``pct_inclusive_by_marker`` counts a sample for every marker its stack
    passes through, so those shares overlap.
    """
    owners: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        owners[sample_owner(frames)] += count
        self_time[frames[-1].rsplit(":", 1)[0] + ")"] += count
        for name, needle in MARKERS.items():
            if needle in stack:
                markers[name] += count
    if total == 0:
        return {"samples": 0}

    def shares(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
        return {key: round(100 * n / total, 1) for key, n in counter.most_common(limit)}

    return {
        "samples": total,
        "pct_by_owner": shares(owners),
        "pct_self_by_function": shares(self_time, top),
        "pct_inclusive_by_marker": shares(markers),
    }


def profile_notes(profile: dict[str, Any]) -> list[str]:
    """One line per hot spot, for the results file."""
    if not profile.get("samples"):
        return [f"no profile: {profile.get('error', 'no samples')}"]
    notes = [
        f"{pct}% of on-CPU samples owned by {owner}"
        for owner, pct in list(profile["pct_by_owner"].items())[:6]
    ]
    notes += [
        f"{pct}% of samples pass through: {marker}"
        for marker, pct in profile["pct_inclusive_by_marker"].items()
        if pct >= 2.0
    ]
    notes += [
        f"{pct}% self in {function}"
        for function, pct in list(profile["pct_self_by_function"].items())[:5]
    ]
    return notes


# --- Latency ---------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list.

    Examples
    --------
    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    >>> percentile([float(v) for v in range(1, 101)], 0.99)
    99.0
    """
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def send_at_rate(
    settings: Settings, events: list[dict[str, Any]], rate: float
) -> tuple[dict[tuple[str, int], float], float]:
    """Send ``events`` at a constant ``rate`` per second; send times (epoch ms) by
    ``(customer_id, event ts)`` (the earliest where two share one), and the
    seconds sending took."""
    names = settings.topic_names()
    producer = make_producer(settings)
    sent_ms: dict[tuple[str, int], float] = {}
    started = time.monotonic()
    try:
        for index, event in enumerate(events):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            role, key, value = encode_event(event)
            now_ms = time.time() * 1000
            producer.send(names[role], key=key, value=value)
            customer_id = event.get("customer_id")
            if customer_id is not None and event.get("type") != "identify":
                sent_ms.setdefault((str(customer_id), parse_event_time(event["ts"])), now_ms)
        producer.flush()
    finally:
        producer.close()
    return sent_ms, time.monotonic() - started


def input_records(settings: Settings) -> int:
    """Records on the input topics now (sum of end offsets; the topics are never compacted)."""
    names = [settings.topic_names()[role] for role in INPUT_ROLES]
    consumer = make_consumer(settings)
    try:
        partitions = [
            TopicPartition(name, partition)
            for name in names
            for partition in consumer.partitions_for_topic(name) or ()
        ]
        return int(sum(consumer.end_offsets(partitions).values()))
    finally:
        consumer.close()


def read_changes(settings: Settings, expected: int, timeout_s: float = 120.0) -> list[Any]:
    """Every record of the segment-changes topic, once ``expected`` are there."""
    topic = settings.topic_names()["segment_changes"]
    consumer = make_consumer(settings, topic, consumer_timeout_ms=1000)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def measure_latency(
    bootstrap: str, workload: Workload, rate: float, workdir: Path
) -> dict[str, Any]:
    """p50/p99 produce → segment-change latency of one worker at a constant offered load."""
    prefix = f"lat{uuid.uuid4().hex[:6]}."
    settings = Settings(_env_file=None, kafka_bootstrap=bootstrap, topic_prefix=prefix)
    create_topics(settings)
    workers = start_workers(1, bootstrap, prefix, workdir, "latency")
    try:
        wait_all_ready(workers)
        sent_ms, send_s = send_at_rate(settings, workload.events, rate)
        counts, _ = wait_processed(workers, workload.segstream_expected, timeout_s=300)
        # send_soon: give the worker's producer a moment to send the last batch's changes.
        time.sleep(2.0)
        _, body = workers[0].get("/metrics", timeout_s=10)
        published = int(metric_sum(body.decode(), "segstream_segment_changes_total"))
        rss = peak_rss_mb(workers[0].proc.pid) if workers[0].proc is not None else 0.0
    finally:
        stop_all(workers)
    records = read_changes(settings, published)
    first_sent = min(sent_ms.values(), default=0.0)
    samples: list[tuple[float, float]] = []  # (seconds into sending, latency ms)
    for record in records:
        change = orjson.loads(record.value)
        sent = sent_ms.get((change["customer_id"], int(change["ts"])))
        if sent is not None:
            samples.append(((sent - first_sent) / 1000, record.timestamp - sent))
    latencies = sorted(latency for _, latency in samples)
    result: dict[str, Any] = {
        "offered_events_per_s": round(rate, 1),
        "achieved_events_per_s": round(len(workload.events) / send_s, 1),
        "events": len(workload.events),
        "send_seconds": round(send_s, 1),
        "all_processed": sum(counts) >= workload.segstream_expected,
        "changes_published": published,
        "changes_read": len(records),
        "changes_with_create_time": sum(record.timestamp_type == 0 for record in records),
        "changes_matched_to_an_event": len(latencies),
        "changes_excluded": len(records) - len(latencies),
        "peak_rss_mb": round(rss, 1),
    }
    if latencies:
        result |= latency_summary(latencies)
        result["max_ms"] = round(latencies[-1], 1)
        result["min_ms"] = round(latencies[0], 1)
        result["by_send_window"] = latency_windows(samples, window_s=5.0)
    return result


def latency_summary(sorted_ms: list[float]) -> dict[str, float]:
    """p50, p90, p99 and p99.9 of ascending latencies, ms."""
    quantiles = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
    return {f"{name}_ms": round(percentile(sorted_ms, q), 1) for name, q in quantiles}


def latency_windows(samples: list[tuple[float, float]], window_s: float) -> list[dict[str, Any]]:
    """Latency percentiles per window of send time: where a backlog built up and drained.

    Examples
    --------
    >>> windows = latency_windows([(0.5, 10.0), (1.5, 30.0), (6.0, 20.0)], window_s=5.0)
    >>> [(w["from_s"], w["changes"], w["p99_ms"]) for w in windows]
    [(0.0, 2, 30.0), (5.0, 1, 20.0)]
    """
    windows: dict[int, list[float]] = {}
    for at_s, latency in samples:
        windows.setdefault(int(at_s // window_s), []).append(latency)
    summary = []
    for index in sorted(windows):
        values = sorted(windows[index])
        summary.append(
            {
                "from_s": index * window_s,
                "changes": len(values),
                "p50_ms": round(percentile(values, 0.5), 1),
                "p99_ms": round(percentile(values, 0.99), 1),
            }
        )
    return summary


# --- Targets ---------------------------------------------------------------------


def judge(measured: dict[str, float | None]) -> dict[str, Any]:
    """Each target, the measured figure, whether it is met and by how much it is missed."""
    verdicts: dict[str, Any] = {}
    for name, (op, target) in TARGETS.items():
        value = measured.get(name)
        if value is None:
            verdicts[name] = {"target": f"{op} {target}", "measured": None, "met": None}
            continue
        met = value >= target if op == ">=" else value <= target
        verdict: dict[str, Any] = {"target": f"{op} {target}", "measured": value, "met": met}
        if not met:
            verdict["missed_by"] = round(abs(value - target), 2)
            verdict["missed_by_pct_of_target"] = round(100 * abs(value - target) / target, 1)
        verdicts[name] = verdict
    return verdicts


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest complete run of repeated runs (the least disturbed), with every
    run's rate; a run that stalled short of the end counts only if none completed."""
    complete = [run for run in runs if run.get("complete", True)]
    best = max(complete or runs, key=lambda run: run["events_per_s"])
    return best | {
        "events_per_s_of_each_run": [run["events_per_s"] for run in runs],
        "complete_of_each_run": [run.get("complete", True) for run in runs],
    }


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    return round(numerator["events_per_s"] / denominator["events_per_s"], 3)


def with_retries(name: str, run: Callable[[], dict[str, Any]], tries: int = 4) -> dict[str, Any]:
    """Run a measurement; a failed attempt (a worker crashed) is retried afresh and noted."""
    failures: list[str] = []
    for _ in range(tries):
        try:
            result = run()
        except BenchError as exc:
            failures.append(str(exc).splitlines()[0])
            print(f"{name} attempt failed: {failures[-1]}", flush=True)
            continue
        if failures:
            result["failed_attempts"] = failures
        return result
    raise BenchError(f"{name} failed {tries} times: {failures}")


def measure(
    name: str, run: Callable[[], dict[str, Any]], max_load: float, max_wait_s: float
) -> dict[str, Any]:
    """Wait for a quiet machine, run one measurement, note the load before and after."""
    quiet = wait_for_quiet(max_load, max_wait_s, poll_s=10.0)
    result = with_retries(name, run)
    return result | quiet | {"load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}


# --- Main ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "compare.json")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--latency-seconds", type=float, default=45.0)
    parser.add_argument("--latency-load", type=float, default=0.5)
    parser.add_argument("--profile-seconds", type=int, default=20, help="0 skips the profile")
    parser.add_argument("--profile-raw", type=Path, help="also keep py-spy's raw stacks here")
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--max-load-wait-s", type=float, default=1200.0)
    parser.add_argument("--max-load-wait-per-config-s", type=float, default=180.0)
    args = parser.parse_args()

    peers_python = ensure_peers_venv()
    anonymous_capacity = Settings(_env_file=None).anonymous_buffer_events
    workload = make_workload(args.customers, args.days, THROUGHPUT_SEED, anonymous_capacity)
    latency_pool, _ = simulate(
        SimConfig(
            customers=args.customers,
            days=args.days,
            seed=LATENCY_SEED,
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    quiet = wait_for_quiet(args.max_load, args.max_load_wait_s)
    print(f"load: {quiet}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="segstream-compare-"))
    broker = LocalKafka(home=workdir / "kafka", heap="1g").start()
    try:
        prefix = f"cmp{uuid.uuid4().hex[:6]}."
        settings = Settings(_env_file=None, kafka_bootstrap=broker.bootstrap, topic_prefix=prefix)
        create_topics(settings)
        topics = [settings.topic_names()[role] for role in INPUT_ROLES]
        producer = make_producer(settings, linger_ms=20)
        produced_at = time.monotonic()
        for _ in send_events(settings, workload.events, producer=producer):
            pass
        producer.close()
        produce_s = time.monotonic() - produced_at
        roles = Counter(str(event.get("topic")) for event in workload.events)
        if input_records(settings) != len(workload.events):
            raise BenchError("the input topics do not hold exactly the workload")

        # Segstream runs re-issue stitched events onto the clickstream topic,
        # so each run counts what is there when it starts.
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "a_aiokafka_ceiling": lambda: run_aiokafka_ceiling(
                broker.bootstrap, topics, input_records(settings), workdir
            ),
            "b_faust_floor": lambda: run_floor(
                broker.bootstrap, settings, input_records(settings), workdir
            ),
            "c_quix_streams": lambda: run_quix(
                peers_python, broker.bootstrap, topics, input_records(settings), workdir
            ),
            "d_segstream_1_worker": lambda: run_segstream(
                1, broker.bootstrap, prefix, input_records(settings) + workload.reissued, workdir
            ),
            "e_segstream_2_workers": lambda: run_segstream(
                2, broker.bootstrap, prefix, input_records(settings) + workload.reissued, workdir
            ),
        }
        profile: dict[str, Any] = {}
        measured: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                measured[name].append(
                    measure(name, run, args.max_load, args.max_load_wait_per_config_s)
                )
                print(name, measured[name][-1], flush=True)
                if name == "d_segstream_1_worker" and args.profile_seconds > 0 and not profile:
                    profile = measure(
                        "profile",
                        lambda: profile_worker(
                            peers_python.parent / "py-spy",
                            broker.bootstrap,
                            prefix,
                            args.profile_seconds,
                            workdir,
                            args.profile_raw,
                        ),
                        args.max_load,
                        args.max_load_wait_per_config_s,
                    )
                    print("profile", profile, flush=True)
        configs = {name: fastest(runs_of) for name, runs_of in measured.items()}

        d_rate = configs["d_segstream_1_worker"]["events_per_s"]
        rate = args.latency_load * d_rate
        count = min(len(latency_pool), int(rate * args.latency_seconds))
        latency_workload = Workload(
            latency_pool[:count], reissued_events(latency_pool[:count], anonymous_capacity)
        )
        latency = measure(
            "latency",
            lambda: measure_latency(broker.bootstrap, latency_workload, rate, workdir),
            args.max_load,
            args.max_load_wait_per_config_s,
        )
        latency["load_fraction_of_d"] = args.latency_load
        print("latency", latency, flush=True)

        ratios = {
            "d_over_a": ratio(configs["d_segstream_1_worker"], configs["a_aiokafka_ceiling"]),
            "d_over_b": ratio(configs["d_segstream_1_worker"], configs["b_faust_floor"]),
            "d_over_c": ratio(configs["d_segstream_1_worker"], configs["c_quix_streams"]),
            "e_over_d": ratio(configs["e_segstream_2_workers"], configs["d_segstream_1_worker"]),
        }
        results: dict[str, Any] = {
            "benchmark": "compare",
            "machine": describe(),
            "kafka": broker.version,
            "quixstreams": "3.28.1",
            "parameters": {
                "customers": args.customers,
                "days": args.days,
                "throughput_seed": THROUGHPUT_SEED,
                "latency_seed": LATENCY_SEED,
                "latency_seconds": args.latency_seconds,
                "latency_load": args.latency_load,
                "profile_seconds": args.profile_seconds,
                "repeats": args.repeats,
                "input_partitions": 4,
            },
            "load_average": {"max_load": args.max_load}
            | quiet
            | {"load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "workload": {
                "events": len(workload.events),
                "by_topic": dict(roles),
                "reissued_by_segstream": workload.reissued,
                "produce_s": round(produce_s, 1),
            },
            "configs": configs,
            "ratios": ratios,
            "latency": latency,
            "targets": judge(ratios | {"latency_p99_ms": latency.get("p99_ms")}),
            "profile": profile,
            "profile_notes": profile_notes(profile) if profile else [],
        }
        save_results(results, args.out, echo=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
