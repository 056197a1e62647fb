"""Faust agents: decode, call the pure logic in ``models``, write state, send.

Agents stay thin; every rule lives in ``models`` and ``schemas``. Each input
topic has one agent, and all three share :func:`_process`:

    raw bytes ─ decode_event ─┬─ DecodeError ──► dead-letters topic (+ metric)
                              ├─ anonymous / identify ──► identities_table,
                              │                           re-issued to clickstream
                              └─ record ──► apply_event ──► profiles_table
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import orjson

from models.identity import apply_anonymous
from models.profile import apply_event
from schemas.decode import DecodeError, dead_letter, decode_event
from schemas.records import ClickEvent, InputEvent
from streams import metrics
from streams.app import app, settings
from streams.tables import identities_table, profiles_table
from streams.topics import clickstream_topic, dead_letters_topic, purchases_topic, support_topic

log = logging.getLogger(__name__)

LIMITS = settings.decode_limits()
PROFILE_CONFIG = settings.profile_config()


def _now_ms() -> int:
    # Wall clock only to reject events from the future; all state uses event time.
    return time.time_ns() // 1_000_000


async def _process(role: str, stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        try:
            record = decode_event(role, message.key, message.value, LIMITS, _now_ms())
        except DecodeError as exc:
            await _send_dead_letter(role, message, exc)
            continue
        metrics.events_consumed.labels(role, record.type).inc()
        if isinstance(record, ClickEvent) and (
            record.customer_id is None or record.type == "identify"
        ):
            await _stitch_identity(record)
            continue
        _update_profile(role, record)


async def _send_dead_letter(role: str, message: Any, exc: DecodeError) -> None:
    record = dead_letter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        error=exc,
        message_timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        failed_at_ms=_now_ms(),
    )
    await dead_letters_topic.send(key=message.key, value=msgspec.json.encode(record))
    metrics.decode_failures.labels(role, exc.kind).inc()
    metrics.dead_letters.labels(role).inc()
    log.info(
        "dead letter topic=%s partition=%s offset=%s reason=%s",
        message.topic,
        message.partition,
        message.offset,
        exc.kind,
    )


def _update_profile(role: str, record: InputEvent) -> None:
    customer_id = str(record.customer_id)
    event = {"topic": role, "type": record.type, "ts": record.ts, "event_id": record.event_id}
    state, outcome = apply_event(profiles_table.get(customer_id), event, PROFILE_CONFIG)
    if outcome == "duplicate":
        metrics.duplicate_events.labels(role).inc()
        return
    if outcome == "late":
        metrics.late_events.labels(role).inc()
    profiles_table[customer_id] = state


async def _stitch_identity(record: ClickEvent) -> None:
    anonymous_id = str(record.anonymous_id)
    state, released, outcome = apply_anonymous(
        identities_table.get(anonymous_id),
        msgspec.to_builtins(record),
        settings.anonymous_buffer_events,
    )
    identities_table[anonymous_id] = state
    metrics.anonymous_events.labels(outcome).inc()
    for event in released:
        # Re-keyed by customer_id, so it lands beside the customer's state.
        await clickstream_topic.send(
            key=str(event["customer_id"]).encode(), value=orjson.dumps(event)
        )


@app.agent(clickstream_topic)
async def update_profiles_from_clickstream(stream: Any) -> None:
    """Clickstream → profiles (anonymous browsing via identity stitching)."""
    await _process("clickstream", stream)


@app.agent(purchases_topic)
async def update_profiles_from_purchases(stream: Any) -> None:
    """Orders and refunds → profiles."""
    await _process("purchases", stream)


@app.agent(support_topic)
async def update_profiles_from_support(stream: Any) -> None:
    """Tickets, surveys and complaints → profiles."""
    await _process("support", stream)
