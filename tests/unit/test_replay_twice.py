"""Feeding a history twice to `segstream evaluate` changes no profile (issue: idempotent replays).

The simulated customers here have far more events than the dedup memory
keeps ids of (a few days' worth), so the second pass is refused by the
applied-through window, not by remembering every id.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
from typer.testing import CliRunner

from models.simulator import SimConfig, simulate
from streams.cli.commands import cli


def test_evaluating_the_same_history_twice_gives_the_profiles_of_once(tmp_path: Path) -> None:
    lines, _ = simulate(
        SimConfig(customers=30, days=90, seed=11, start=datetime(2026, 1, 5, tzinfo=UTC))
    )
    lines = [line for line in lines if "malformed" not in line]
    per_customer = Counter(line.get("customer_id") for line in lines)
    # Longer than the ids any customer keeps (about a week of events).
    assert sum(1 for n in per_customer.values() if n > 150) >= 5
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    once.write_bytes(body)
    twice.write_bytes(body + body)
    outputs = {}
    for path in (once, twice):
        out = tmp_path / f"profiles-{path.stem}.jsonl"
        result = CliRunner().invoke(cli, ["evaluate", "--input", str(path), "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs[path.stem] = [orjson.loads(row) for row in out.read_bytes().splitlines()]
    assert len(outputs["once"]) == len(per_customer) - (None in per_customer)
    assert outputs["twice"] == outputs["once"]
