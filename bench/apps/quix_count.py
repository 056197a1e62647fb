"""A Quix Streams peer: count events per key, with the count in RocksDB state.

    var/bench-peers-venv/bin/python -m bench.apps.quix_count --bootstrap HOST:PORT \\
        --topics A,B,C --expected N --group G --state-dir DIR

Runs in the benchmark's own virtualenv (``bench/requirements-peers.txt``),
never in segstream's. The three input topics are concatenated into one
StreamingDataFrame — Quix's way of reading several topics as one stream,
aligned by message timestamp — and a stateful step keeps each key's event
count in its RocksDB store (with Quix's changelog topic, at-least-once, commit
every 5 s: its defaults). The values are decoded by Quix's JSON deserializer
(orjson).

Once ``expected`` events are counted the app prints one JSON line,
``{"events": ..., "seconds": ...}`` — seconds from the end of its first
partition assignment until the last event was counted — then waits for its
standard input to close, so the harness can read its peak RSS while it is
alive.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from quixstreams import Application, State


class TimedApplication(Application):
    """An ``Application`` that notes when its first partition assignment finished."""

    ready_at: float | None = None

    def _on_assign(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(consumer, topic_partitions)
        if topic_partitions and self.ready_at is None:
            self.ready_at = time.monotonic()


class Counter:
    """Counts every event per key in state; stops the app after ``expected`` events."""

    def __init__(self, app: TimedApplication, expected: int) -> None:
        self.app = app
        self.expected = expected
        self.total = 0
        self.finished_at: float | None = None

    def __call__(self, value: Any, state: State) -> None:
        state.set("events", state.get("events", 0) + 1)
        self.total += 1
        if self.total == self.expected:
            self.finished_at = time.monotonic()
            self.app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated topic names")
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()

    app = TimedApplication(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    frames = [
        app.dataframe(app.topic(name, key_deserializer="str", value_deserializer="json"))
        for name in args.topics.split(",")
    ]
    events = frames[0]
    for frame in frames[1:]:
        events = events.concat(frame)
    counter = Counter(app, args.expected)
    events.update(counter, stateful=True)
    app.run()
    if app.ready_at is None or counter.finished_at is None:
        sys.exit(f"stopped early: counted {counter.total} of {args.expected}")
    result = {"events": counter.total, "seconds": counter.finished_at - app.ready_at}
    print(json.dumps(result), flush=True)
    sys.stdin.read()  # the harness reads VmHWM, then closes our stdin


if __name__ == "__main__":
    main()
