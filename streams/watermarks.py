"""Per input partition, the event time up to which every input topic has been read.

The partition engine (:mod:`models.engine`) takes its watermarks as inputs;
this is where the worker measures them, from what it has read and from the
consumer's highwater marks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import KafkaError
from faust.types import TP

from streams.app import app, settings
from streams.internals import committed_offset
from streams.topics import ROLE_BY_TOPIC


class InputWatermarks:
    """Per partition, the event time up to which every input topic has been read.

    A worker reads the three touchpoint topics at their own pace: in a
    backfill, clicks can run hours of event time ahead of orders. Each topic
    partition's frontier is the latest event time read from it; the
    partition's watermark is the smallest frontier. A topic partition that
    has been caught up (nothing left to fetch) for ``idle_s`` seconds of
    wall-clock time (a quiet support topic, say) stops holding the others
    back — the only use of wall-clock time here, as in Flink's idleness and
    Kafka Streams' ``max.task.idle.ms``. Two idle times are asked for: a
    cautious one for closing windows and firing deadlines, and a short one
    for releasing held events (see :mod:`streams.agents`).
    """

    def __init__(self) -> None:
        self.frontier: dict[tuple[str, int], int] = {}
        self.caught_up_since: dict[tuple[str, int], float | None] = {}

    def observe(self, message: Any, ts: int | None) -> None:
        """A message was read; ``ts`` is its event time (``None``: undecodable)."""
        key = (message.topic, message.partition)
        if ts is not None:
            self.frontier[key] = max(self.frontier.get(key, ts), ts)
        try:
            highwater = app.consumer.highwater(message.tp) if app.consumer else None
        except (AssertionError, KafkaError):  # revoked meanwhile
            highwater = None
        caught_up = highwater is not None and message.offset + 1 >= highwater
        # Idle means caught up with nothing new for idle_s: every message
        # restarts the clock.
        self.caught_up_since[key] = time.monotonic() if caught_up else None

    def watermark(self, partition: int, idle_s: float) -> int:
        """The partition's input watermark; 0 while an input may still bring older data."""
        now = time.monotonic()
        frontiers: list[int] = []
        holding: list[int] = []
        for topic in ROLE_BY_TOPIC:
            key = (topic, partition)
            since = self.caught_up_since.get(key)
            idle = since is not None and now - since >= idle_s
            if key in self.frontier:
                frontiers.append(self.frontier[key])
                if not idle:
                    holding.append(self.frontier[key])
            elif not idle:
                # Never read from in this process: unread data, or an empty
                # partition whose idleness clock starts now.
                self._start_idle_clock_if_empty(key)
                return 0
        if not frontiers:
            return 0
        return min(holding) if holding else max(frontiers)

    def _start_idle_clock_if_empty(self, key: tuple[str, int]) -> None:
        # Synchronous on purpose: asking the consumer thread (``position``)
        # while holding the processing lock deadlocks a rebalance, whose
        # revocation waits on the event loop for the batch to finish. The
        # offset Faust seeked to at assignment (the committed one) stands in
        # for the position of a partition nothing was read from yet.
        if self.caught_up_since.get(key) is not None or app.consumer is None:
            return
        tp = TP(*key)
        try:
            highwater = app.consumer.highwater(tp)
        except (AssertionError, KafkaError):  # not assigned (any more): not idle
            return
        committed = committed_offset(app.consumer, tp)
        if highwater is not None and (highwater == 0 or (committed or 0) >= highwater):
            self.caught_up_since[key] = time.monotonic()


input_watermarks = InputWatermarks()


def watermarks(partitions: Iterable[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition: the cautious watermark (windows, deadlines) and the release one."""
    closing = {p: input_watermarks.watermark(p, settings.input_idle_s) for p in partitions}
    release = {p: input_watermarks.watermark(p, settings.reorder_idle_s) for p in closing}
    # Never release below what is closed: a window closed against an event time
    # has every event up to it applied.
    return closing, {p: max(release[p], closing[p]) for p in closing}
