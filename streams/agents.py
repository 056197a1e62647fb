"""Faust agents: decode, call the pure logic in ``models``, write state, send.

Agents stay thin; every rule lives in ``models`` and ``schemas``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from models.profile import apply_event
from schemas.event_time import parse_event_time
from streams.app import app
from streams.tables import profiles_table
from streams.topics import clickstream_topic

log = logging.getLogger(__name__)


@app.agent(clickstream_topic)
async def update_profiles(stream: Any) -> None:
    """Count clickstream events per customer into ``profiles_table``."""
    async for event in stream.events():
        message = event.message
        try:
            payload = orjson.loads(event.value)
            customer_id = str(payload["customer_id"])
            payload["ts_ms"] = parse_event_time(payload["ts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning(
                "undecodable event topic=%s partition=%s offset=%s error=%s",
                message.topic,
                message.partition,
                message.offset,
                type(exc).__name__,
            )
            continue
        profiles_table[customer_id] = apply_event(profiles_table.get(customer_id), payload)
