"""Faust agents: decode, hand each partition's records to its engine, send what it returns.

Agents stay thin; every rule lives in ``models`` (the partition engine,
:mod:`models.engine`) and ``schemas``. The path of one event::

    raw bytes ─ decode_event ─┬─ DecodeError ──► dead-letters topic (+ metric)
                              ├─ suppressed id ──► dropped (+ metric)
                              └─ record ──► grouped by input partition
    per partition: PartitionEngine.submit(records, watermarks)
        identity stitching │ hold until the release watermark │ update_customer
        │ held events and deadlines the watermarks reached
    ──► Outputs: segment changes, triggers, training examples, re-keyed events
    ──► outbox (streams.engines.publish); state ──► write-back caches ──(commit)──► tables

Two input watermarks per partition (:mod:`streams.watermarks`): the
*closing* one (``INPUT_IDLE_S``, cautious) fires deadlines; the *release*
one (``REORDER_IDLE_S``, prompt by default) lets held events through, so
live latency does not wait for a quiet topic. Both use event time; only a
caught-up topic's idleness is wall-clock. The engine applies what they
reached in event-time order, so no output depends on when they were measured.

State is written to the tables once per customer per offset commit, not
once per event (:mod:`streams.state_cache`): Faust writes the caches back
when a commit begins and commits only offsets whose state is written, so a
crash replays exactly the events whose effect was lost — and per-customer
deduplication drops any whose effect was not.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import msgspec
from faust.types import TP, AppT

from models.engine import Outputs, Watermarks
from schemas.decode import DecodeError, decode_event
from streams import metrics
from streams.app import app, settings
from streams.engines import (
    engine_for,
    engines,
    forget,
    now_ms,
    outbox,
    position,
    processing,
    publish,
    send_dead_letter,
)
from streams.erasure import erase_customers, suppressed
from streams.outbox import UndeliveredError
from streams.topics import ROLE_BY_TOPIC, touchpoints_topic
from streams.watermarks import input_watermarks, watermarks

__all__ = ["advance_idle_partitions", "erase_customers", "update_profiles"]

log = logging.getLogger(__name__)

LIMITS = settings.decode_limits()


@app.agent(touchpoints_topic)
async def update_profiles(stream: Any) -> None:
    """Clickstream, purchases and support → profiles, segment changes and triggers."""
    async for batch in stream.take_events(settings.batch_max_events, settings.batch_max_wait_s):
        async with processing:
            try:
                await process_batch(batch)
            except Exception as exc:
                # Faust acknowledges a batch the agent raised on, and restarts
                # the agent: the rest of the batch would be committed unread.
                # Stop before any commit instead; the batch is consumed again.
                first, last = batch[0].message, batch[-1].message
                failure = UndeliveredError(
                    f"batch of {len(batch)} events from {position(first)} to {position(last)} "
                    f"failed ({type(exc).__name__})"
                )
                outbox.stop(failure)
                raise


async def process_batch(batch: list[Any]) -> None:
    """Decode a batch, hand each partition's records to its engine, send the outputs."""
    records: dict[int, list[dict[str, Any]]] = defaultdict(list)
    latest: dict[int, Any] = {}  # partition -> its latest event: where state writes land
    # (topic, partition) -> its last message in the batch and latest event time
    read: dict[tuple[str, int], tuple[Any, int | None]] = {}
    received_ms = now_ms()
    for event in batch:
        message = event.message
        role = ROLE_BY_TOPIC[message.topic]
        try:
            record = decode_event(role, message.key, message.value, LIMITS, now_ms())
        except DecodeError as exc:
            # Read all the same, so it holds nothing back.
            read[(message.topic, message.partition)] = (message, _latest(read, message, None))
            await send_dead_letter(role, message, exc)
            continue
        metrics.child(metrics.events_consumed, role, record.type).inc()
        metrics.child(metrics.event_lag, role).observe(max(received_ms - int(record.ts), 0) / 1000)
        read[(message.topic, message.partition)] = (message, _latest(read, message, int(record.ts)))
        if suppressed(role, record):  # an erased id: dropped and counted (streams.erasure)
            continue
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        records[message.partition].append(fields)
        latest[message.partition] = event
    # records: {partition: [event fields, ...]} in arrival order
    for message, ts in read.values():
        input_watermarks.observe(message, ts)
    closing, release = watermarks(records)
    outputs = Outputs()
    for partition, arrived in records.items():
        marks = Watermarks(closing[partition], release[partition])
        outputs.extend(engine_for(partition, latest[partition]).submit(arrived, marks))
    await publish(outputs, origin=position(batch[-1].message))


def _latest(
    read: dict[tuple[str, int], tuple[Any, int | None]], message: Any, ts: int | None
) -> int | None:
    """The latest event time read from the message's topic partition in this batch."""
    before = read.get((message.topic, message.partition), (None, None))[1]
    if before is None or ts is None:
        return ts if before is None else before
    return max(before, ts)


@app.timer(interval=1.0)
async def advance_idle_partitions() -> None:
    """Move partitions on when no event comes but their watermark moved.

    An input topic that is caught up and idle stops holding a partition's
    watermark back (``INPUT_IDLE_S``) without any new event to process, so
    the events it held and the deadlines it passed are acted on here.
    """
    if app.rebalancing:
        return  # partitions are moving; the next batch or tick moves them on
    async with processing:
        closing, release = watermarks(list(engines))
        moved = [
            (partition, engine)
            for partition, engine in list(engines.items())
            if (closing[partition], release[partition]) > engine.advanced_to
        ]
        if not moved:
            return
        outputs = Outputs()
        for partition, engine in moved:
            marks = Watermarks(closing[partition], release[partition])
            outputs.extend(engine.advance(marks))
        await publish(outputs, origin="idle advance")


# mode types a receiver as taking any number of positional arguments; Faust
# sends exactly one here, the revoked partitions.
@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: AppT, revoked: set[TP], **kwargs: Any) -> None:
    # Written when the rebalance started; a batch that finished since is
    # written now, then the revoked partitions' engines are dropped.
    forget({tp.partition for tp in revoked if tp.topic in ROLE_BY_TOPIC})
