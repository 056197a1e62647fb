"""Decode + validate cost per event, side by side in one run.

    .venv/bin/python -m bench.decode_bench [--customers 500] [--repeat 5]

Measures, over the same simulator workload (all three topics, realistic mix):
  * ``orjson_only`` — orjson.loads alone, the floor of any JSON decoder;
  * ``segstream``   — schemas.decode.decode_event: orjson + msgspec validation
                      + normalisation + bound and key checks (what agents run);
  * ``pydantic``    — orjson + an equivalent pydantic v2 model, clickstream only,
                      the alternative we rejected.
Best of ``--repeat`` runs, in microseconds per event; written to
bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench.machine import describe, save_results
from models.simulator import SimConfig, simulate
from schemas.decode import DecodeLimits, decode_event
from schemas.event_time import parse_event_time
from schemas.records import ClickChannel, ClickType
from streams.producer import encode_event

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"


class PydanticClick(BaseModel):
    """The clickstream contract in pydantic, for comparison only."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    event_id: str = Field(min_length=1, max_length=128)
    ts: int
    type: ClickType
    schema_version: Literal[1] = 1
    customer_id: str | None = None
    anonymous_id: str | None = None
    session_id: str | None = None
    channel: ClickChannel = "web"
    page: str | None = None
    product_id: str | None = None
    category: str | None = None
    duration_ms: int | None = Field(None, ge=0)
    campaign: str | None = None
    query: str | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: object) -> int:
        return parse_event_time(value)


def best_of(repeat: int, run: Callable[[], int]) -> float:
    """Best wall time per item over ``repeat`` runs, in microseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count = run()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    events, _ = simulate(
        SimConfig(customers=args.customers, days=60, seed=7, start=datetime(2026, 1, 1, tzinfo=UTC))
    )
    messages = [encode_event(e) for e in events]
    clicks = [(k, v) for role, k, v in messages if role == "clickstream"]
    limits = DecodeLimits()
    now_ms = time.time_ns() // 1_000_000

    def orjson_only() -> int:
        for _, _, value in messages:
            orjson.loads(value)
        return len(messages)

    def segstream() -> int:
        for role, key, value in messages:
            decode_event(role, key, value, limits, now_ms)
        return len(messages)

    def segstream_clicks() -> int:
        for key, value in clicks:
            decode_event("clickstream", key, value, limits, now_ms)
        return len(clicks)

    def pydantic_clicks() -> int:
        for _, value in clicks:
            PydanticClick.model_validate(orjson.loads(value))
        return len(clicks)

    mix = dict(Counter(role for role, _, _ in messages))
    results: dict[str, Any] = {
        "benchmark": "decode",
        "machine": describe(),
        "events": len(messages),
        "mix": mix,
        "us_per_event": {
            "orjson_only": round(best_of(args.repeat, orjson_only), 3),
            "segstream": round(best_of(args.repeat, segstream), 3),
            "segstream_clickstream_only": round(best_of(args.repeat, segstream_clicks), 3),
            "pydantic_clickstream_only": round(best_of(args.repeat, pydantic_clicks), 3),
        },
        "target_us": 10.0,
    }
    results["target_met"] = results["us_per_event"]["segstream"] <= results["target_us"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    save_results(results, RESULTS, echo=True)


if __name__ == "__main__":
    main()
