"""The framework's floor: a bare Faust agent that decodes and discards.

Run as ``faust -A bench.apps.faust_floor worker`` with ``FLOOR_BROKER``,
``FLOOR_TOPICS`` (comma-separated), ``FLOOR_APP_ID`` and ``FLOOR_WEB_PORT``;
``GET /count`` answers how many events it has consumed.
"""

from __future__ import annotations

import os
from typing import Any

import faust
import orjson
from faust import web

app = faust.App(
    os.environ.get("FLOOR_APP_ID", "faust-floor"),
    broker=f"kafka://{os.environ.get('FLOOR_BROKER', '127.0.0.1:9092')}",
    store="memory://",
    web_port=int(os.environ.get("FLOOR_WEB_PORT", "6070")),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    env={},
    # FLOOR_TUNED=1 applies the consumer settings segstream's workers use.
    **(
        {
            "stream_buffer_maxsize": 32768,
            "broker_max_poll_records": 5000,
            "consumer_max_fetch_size": 4 * 1024 * 1024,
        }
        if os.environ.get("FLOOR_TUNED") == "1"
        else {}
    ),
)
topics = app.topic(
    *os.environ.get("FLOOR_TOPICS", "segstream.clickstream").split(","),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
consumed = 0


@app.agent(topics)
async def decode_and_discard(stream: Any) -> None:
    global consumed
    async for event in stream.events():
        orjson.loads(event.value)
        consumed += 1


@app.page("/count")
async def count(self: web.View, request: web.Request) -> web.Response:
    return self.json({"consumed": consumed})


@app.page("/readyz")
async def ready(self: web.View, request: web.Request) -> web.Response:
    assigned = bool(app.consumer.assignment()) if app.consumer else False
    return self.json({"ready": assigned}, status=200 if assigned else 503)
