"""The ceiling for Python here: a raw aiokafka consumer that decodes with orjson.

    python -m bench.apps.aiokafka_ceiling --bootstrap HOST:PORT --topics A,B,C --expected N

The consumer has no group (``group_id=None``): it is assigned every partition
of the topics at once, with no rebalance, and reads them from the beginning
with the fetch settings segstream's workers use; each value is decoded with
orjson and counted. Once
``expected`` events are counted the app prints one JSON line,
``{"events": ..., "seconds": ...}`` — seconds from the consumer being started
and assigned until the last event was decoded — then waits for its standard
input to close, so the harness can read its peak RSS while it is alive.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer


async def consume(bootstrap: str, topics: list[str], expected: int) -> dict[str, float]:
    """Decode ``expected`` events from ``topics``; return the count and the seconds taken."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,  # every partition, no group coordination
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.01)
        started = time.monotonic()
        consumed = 0
        while consumed < expected:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                consumed += len(records)
        elapsed = time.monotonic() - started
    finally:
        await consumer.stop()
    return {"events": consumed, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated topic names")
    parser.add_argument("--expected", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topics.split(","), args.expected))
    print(orjson.dumps(result).decode(), flush=True)
    sys.stdin.read()  # the harness reads VmHWM, then closes our stdin


if __name__ == "__main__":
    main()
