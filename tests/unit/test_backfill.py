"""Backfill mode: `segstream replay --historical` records old moments, messages nobody.

The engine runs with a fixed wall clock; the same simulated history is fed
plain and marked historical, and the two runs are compared.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from models.engine import EngineConfig, Outputs, PartitionEngine, PartitionStores, Watermarks
from models.profile import DAY_MS
from streams.cli import commands
from streams.cli.commands import cli
from streams.producer import mark_historical
from tests.unit.test_engine import HISTORY

CONFIG = EngineConfig.default()
HOUR_MS = 3_600_000
END = max(int(r["ts"]) for r in HISTORY)


def run(records: list[dict[str, Any]], now_ms: int) -> tuple[PartitionEngine, Outputs]:
    engine = PartitionEngine(0, PartitionStores.in_memory(), CONFIG, clock_ms=lambda: now_ms)
    outputs = Outputs()
    for start in range(0, len(records), 40):
        batch = records[start : start + 40]
        outputs.extend(engine.submit(batch, Watermarks.up_to(max(int(r["ts"]) for r in batch))))
    outputs.extend(engine.advance(Watermarks.up_to(END)))
    return engine, outputs


def marked(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "historical": True} for r in records]


def without_flag(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "historical"} for c in changes]


def test_a_backfill_long_past_marks_every_change_and_withholds_every_trigger() -> None:
    now = END + 30 * DAY_MS
    _, plain = run(HISTORY, now)
    engine, backfill = run(marked(HISTORY), now)
    assert plain.triggers, "the plain history fires triggers: the comparison means something"
    assert backfill.triggers == []
    withheld = {k: n for (what, k), n in backfill.counts.items() if what == "historical_trigger"}
    assert withheld == dict(Counter(t["kind"] for t in plain.triggers))
    # The same changes, each marked historical; none marked in the plain run.
    assert all(c.get("historical") is True for c in backfill.changes)
    assert not any("historical" in c for c in plain.changes)
    assert without_flag(backfill.changes) == plain.changes
    # State does not depend on the mark, but for the flag itself.
    profiles = engine.stores.profiles.data  # type: ignore[attr-defined]
    assert all(p.get("backfilling") is True for p in profiles.values())


def test_the_last_day_of_a_backfill_is_live() -> None:
    now = END + HOUR_MS  # the history runs up to an hour ago
    _, plain = run(HISTORY, now)
    _, backfill = run(marked(HISTORY), now)
    cutoff = now - CONFIG.historical_after_ms
    recent = [c for c in backfill.changes if c["ts"] >= cutoff]
    assert recent and not any("historical" in c for c in recent)
    assert all(c.get("historical") is True for c in backfill.changes if c["ts"] < cutoff)
    assert backfill.triggers == [t for t in plain.triggers if t["ts"] >= cutoff]


def test_a_live_event_after_the_backfill_ends_it_for_that_customer() -> None:
    now = END + 30 * DAY_MS
    engine, _ = run(marked(HISTORY), now)
    customer = str(next(r["customer_id"] for r in HISTORY if r.get("customer_id")))
    click = {
        "topic": "clickstream",
        "type": "page_view",
        "ts": END + DAY_MS,
        "event_id": "live-1",
        "customer_id": customer,
        "channel": "web",
    }
    engine.submit([click], Watermarks.up_to(END + DAY_MS))
    assert "backfilling" not in engine.stores.profiles.get(customer)


def test_replay_historical_marks_every_event_it_sends(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(commands, "_send_with_progress", lambda events, speed: sent.extend(events))
    history = tmp_path / "events.jsonl"
    history.write_text(
        '{"topic": "purchases", "type": "order", "event_id": "o1", "customer_id": "c1",'
        ' "order_id": "o1", "amount": 5, "ts": "2025-01-02T10:00:00+00:00"}\n'
    )
    result = CliRunner().invoke(cli, ["replay", str(history), "--historical"])
    assert result.exit_code == 0, result.output
    assert [e["historical"] for e in sent] == [True]
    assert mark_historical({"malformed": "bad_json", "raw": b"{"}) == {
        "malformed": "bad_json",
        "raw": b"{",
    }


def test_the_historical_mark_passes_the_input_contracts() -> None:
    from schemas.decode import DecodeLimits, decode_event
    from streams.producer import encode_event

    line = {
        "topic": "support",
        "type": "complaint",
        "event_id": "t1",
        "customer_id": "c1",
        "ts": datetime(2025, 1, 2, tzinfo=UTC).isoformat(),
        "historical": True,
    }
    role, key, value = encode_event(line)
    record = decode_event(role, key, value, DecodeLimits(), END)
    assert record.historical is True


@pytest.mark.parametrize(
    ("topic", "field", "value", "kind"),
    [
        ("support", "historical", "yes", "wrong_type"),
        ("clickstream", "identified_by", "x" * 500, "invalid_value"),
    ],
)
def test_a_bad_new_field_is_a_decode_error_for_the_dead_letter_topic(
    topic: str, field: str, value: object, kind: str
) -> None:
    """What the worker sends to the dead-letter topic, with this kind as its reason."""
    import orjson

    from schemas.decode import DecodeError, DecodeLimits, decode_event

    event = {"type": "complaint" if topic == "support" else "page_view", "event_id": "t1"}
    event |= {"customer_id": "c1", "ts": "2025-01-02T00:00:00+00:00", field: value}
    with pytest.raises(DecodeError) as raised:
        decode_event(topic, b"c1", orjson.dumps(event), DecodeLimits(), END)
    assert raised.value.kind == kind
    assert field in raised.value.message
