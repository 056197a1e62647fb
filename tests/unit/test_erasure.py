"""Erasure without a broker: topic configs of the bound, erasure records,
index cleanup, suppression expiry and the notifier forgetting a customer."""

from __future__ import annotations

from pathlib import Path

import orjson

from examples.notifier import LogSink, dropped
from models.deadlines import DeadlineIndex, DictStore
from models.pipeline import (
    erased_aliases,
    erasure_changes,
    index_without_customer,
    still_suppressed,
    suppression_entry,
)
from schemas.records import SegmentChange
from streams.cli.admin import TABLES, changelog_specs, topic_specs
from streams.settings import Settings


def test_changelogs_compact_within_the_erasure_bound_and_overrides_win() -> None:
    configs = Settings(_env_file=None, erasure_bound_hours=24).changelog_configs()
    eight_hours = str(8 * 3_600_000)
    assert configs["segment.ms"] == configs["max.compaction.lag.ms"] == eight_hours
    assert configs["delete.retention.ms"] == eight_hours
    assert configs["min.compaction.lag.ms"] == "0"
    assert configs["cleanup.policy"] == "compact"
    overridden = Settings(
        _env_file=None, changelog_topic_configs={"segment.ms": "500"}
    ).changelog_configs()
    assert overridden["segment.ms"] == "500"


def test_every_table_changelog_is_declared_with_the_bound() -> None:
    settings = Settings(_env_file=None, app_id="shop", input_partitions=6)
    specs = changelog_specs(settings)
    assert [s.name for s in specs] == [f"shop-{table}-changelog" for table in TABLES]
    assert all(s.partitions == 6 and s.config == settings.changelog_configs() for s in specs)


def test_topics_with_plain_ids_or_raw_bytes_get_a_retention() -> None:
    settings = Settings(
        _env_file=None,
        erasure_requests_retention_hours=2,
        dead_letter_retention_days=3,
        output_retention_days=5,
    )
    by_role = {spec.role: spec.config for spec in topic_specs(settings)}
    assert by_role["erasure_requests"]["retention.ms"] == str(2 * 3_600_000)
    assert by_role["dead_letters"]["retention.ms"] == str(3 * 86_400_000)
    assert by_role["segment_changes"]["retention.ms"] == str(5 * 86_400_000)
    assert by_role["triggers"]["retention.ms"] == str(5 * 86_400_000)
    # Retention deletes whole segments, so they roll well within it.
    assert int(by_role["erasure_requests"]["segment.ms"]) < 2 * 3_600_000
    assert "retention.ms" not in by_role["clickstream"]  # the producers' topic


def test_erasure_publishes_an_exit_per_segment_then_customer_erased_with_stable_ids() -> None:
    profile = {
        "segments": {
            "lifecycle": {"value": "active", "since_ms": 1},
            "engagement": {"value": "heavy", "since_ms": 2},
        }
    }
    first = erasure_changes("c1", profile, "r1", 100, b"key")
    again = erasure_changes("c1", profile, "r1", 999, b"key")
    assert [c["change_id"] for c in first] == [c["change_id"] for c in again]
    assert len({c["change_id"] for c in first}) == 3
    kinds = [(c["change_kind"], c["dimension"], c["from_segment"]) for c in first]
    assert kinds == [
        ("exit", "engagement", "heavy"),
        ("exit", "lifecycle", "active"),
        ("customer_erased", "customer", None),
    ]
    records = [SegmentChange(**c) for c in first]  # the published contract accepts them
    assert all(r.to_segment is None and r.customer_id == "c1" for r in records)
    assert [c["change_kind"] for c in erasure_changes("c1", None, "r1", 0, b"k")] == [
        "customer_erased"
    ]


def test_a_plain_segment_change_still_decodes_without_the_new_field() -> None:
    import msgspec

    old = {"change_id": "x", "customer_id": "c1", "dimension": "lifecycle",
           "from_segment": None, "to_segment": "new", "ts": 0, "reason": "first order"}  # fmt: skip
    record = msgspec.json.decode(orjson.dumps(old), type=SegmentChange)
    assert record.change_kind == "change"


def test_every_index_entry_of_the_customer_goes_stale_ones_and_held_ones_too() -> None:
    store = DictStore()
    deadlines = DeadlineIndex(store, partition=0, bucket_ms=100)
    held = DeadlineIndex(store, partition=0, bucket_ms=100, namespace="h")
    deadlines.schedule("c1", 150)
    deadlines.schedule("c1", 420)  # refiled: the entry at 150 is stale but stays
    deadlines.schedule("c2", 430)
    held.schedule("c1", 250)
    for key, entries in index_without_customer(store.data.items(), "c1"):
        if entries is None:
            store.delete(key)
        else:
            store.put(key, entries)
    named = [e for key, v in store.data.items() if isinstance(v, list) for e in v if e[1] == "c1"]
    assert named == []
    assert deadlines.pop_due(1000) == [(430, "c2")]
    assert held.pop_due(1000) == []


def test_aliases_come_from_the_profile_and_from_held_events() -> None:
    held = [{"anonymous_id": "a2", "customer_id": "c1"}, {"customer_id": "c1"}]
    assert erased_aliases({"anonymous_ids": ["a1"]}, held) == ["a1", "a2"]
    assert erased_aliases(None, []) == []


def test_suppression_never_expires_unless_an_expiry_is_set() -> None:
    assert still_suppressed(suppression_entry(1_000, None), 10**15)
    entry = suppression_entry(1_000, 500)
    assert still_suppressed(entry, 1_499) and not still_suppressed(entry, 1_500)
    assert not still_suppressed(None, 0)


def test_the_notifier_forgets_an_erased_customer_but_keeps_delivered_ids(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "deliveries.jsonl")
    sink.deliver("t1", "triggers", {"trigger_id": "t1", "customer_id": "c1", "kind": "vip"})
    sink.deliver("t2", "triggers", {"trigger_id": "t2", "customer_id": "c2", "kind": "vip"})
    sink.forget("c1")
    text = sink.path.read_bytes()
    assert b"c1" not in text and b"c2" in text
    assert sink.delivered() == {"t1", "t2"}  # a redelivered record is still dropped
    trigger = {"trigger_id": "t3", "customer_id": "c1", "kind": "win_back"}
    notice = {"change_id": "e", "customer_id": "c1", "change_kind": "customer_erased"}
    assert dropped(trigger, {"c1"}) and not dropped(notice, {"c1"})
