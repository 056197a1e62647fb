"""Backtesting with ``segstream evaluate``: deadlines up to the cutoff, and what
would have been sent (``--changes``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from models.profile import DAY_MS
from models.simulator import SimConfig, simulate, write_outputs
from schemas.event_time import parse_event_time
from streams.cli.commands import cli

CONFIG = SimConfig(customers=40, days=30, seed=5)


def backtest(tmp_path: Path, cutoff_ms: int | None) -> tuple[list[dict[str, Any]], list[Any]]:
    write_outputs(CONFIG, tmp_path)
    out, changes = tmp_path / "profiles.jsonl", tmp_path / "changes.jsonl"
    args = ["evaluate", "--input", str(tmp_path / "events.jsonl"), "--out", str(out)]
    args += ["--changes", str(changes)]
    if cutoff_ms is not None:
        args += ["--cutoff", str(cutoff_ms)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = [orjson.loads(line) for line in changes.read_bytes().splitlines()]
    profiles = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return records, profiles


def last_event_ms() -> int:
    events, _ = simulate(CONFIG)
    return max(parse_event_time(e["ts"]) for e in events if "ts" in e)


def test_changes_lists_every_change_and_trigger_the_run_published(tmp_path: Path) -> None:
    records, profiles = backtest(tmp_path, None)
    kinds = Counter(r["output"] for r in records)
    assert kinds["segment_change"] > len(profiles) and kinds["trigger"] > 0
    # The segments each profile ends in are the last change of each dimension.
    final: dict[tuple[str, str], Any] = {}
    for r in records:
        if r["output"] == "segment_change":
            final[(r["customer_id"], r["dimension"])] = r["to_segment"]
    for profile in profiles:
        for dimension, segment in profile["segments"].items():
            assert final.get((profile["customer_id"], dimension)) == segment["value"]


def test_the_cutoff_fires_the_deadlines_after_the_last_event(tmp_path: Path) -> None:
    last = last_event_ms()
    cutoff = last + 200 * DAY_MS
    records, profiles = backtest(tmp_path, cutoff)
    later = [r for r in records if r["output"] == "segment_change" and r["ts"] > last]
    # Two hundred silent days move buyers through the lifecycle thresholds.
    assert {"lifecycle"} <= {r["dimension"] for r in later}
    assert all(r["ts"] <= cutoff for r in records)
    buyers = [p for p in profiles if p["lifetime"]["orders"]]
    assert buyers and all(p["segments"]["lifecycle"]["value"] == "churned" for p in buyers)
