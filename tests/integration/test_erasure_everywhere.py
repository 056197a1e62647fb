"""Issue 14, item 4, on the real broker: after an erasure, and a compaction
bound set short for the test, the customer's id occurs in no changelog
segment, no RocksDB file and no erasure request, byte for byte (``grep -a``);
consumers are told (exits and ``customer_erased``), and a later event for the
id is dropped and counted."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli.admin import admin_client, create_topics
from streams.cli.process import WorkerProcess
from streams.partitioning import partition_for_key
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import fetch_profile, read_topic

# Distinctive ids: no prefix shared with other keys, so RocksDB's key prefix
# compression cannot hide them from a byte search (README, Right to be forgotten).
VICTIM = "zq-erase-me-7c41d9"
ALIAS = "zq-alias-of-erased-52be"
# In the victim's partition, whose watermark releases its click.
BYSTANDER = next(
    f"c-bystander-{i}"
    for i in range(100)
    if partition_for_key(f"c-bystander-{i}", 4) == partition_for_key(VICTIM, 4)
)
T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
# 6 s each for segment.ms, max.compaction.lag.ms and delete.retention.ms.
BOUND_HOURS = 18 / 3600
REQUESTS_RETENTION_HOURS = 18 / 3600


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def click(event_id: str, minutes: int, customer: str | None, **extra: Any) -> dict[str, Any]:
    event = {"topic": "clickstream", "event_id": event_id, "ts": at(minutes), "type": "page_view",
             "channel": "web", "session_id": f"s-{event_id[:3]}", **extra}  # fmt: skip
    if customer is not None:
        event["customer_id"] = customer
    return event


def history() -> list[dict[str, Any]]:
    """Browsing stitched by an identify, an order, a ticket and a late click.

    The release watermark of the victim's partition stops at the order
    (the clickstream is ahead, the support topic behind; both idle times are
    long): the order and the clicks before it make a profile, the ticket and
    the last click stay held — in the held table and its changelog.
    """
    order = {
        "topic": "purchases",
        "event_id": "v-order",
        "order_id": "v-o1",
        "customer_id": VICTIM,
        "ts": at(3),
        "type": "order",
        "amount": 50.0,
        "currency": "EUR",
        "channel": "web",
        "items": [{"sku": "sku-1", "category": "books", "qty": 1, "unit_price": 50.0}],
    }
    ticket = {
        "topic": "support",
        "event_id": "v-ticket",
        "customer_id": VICTIM,
        "ts": at(5),
        "type": "ticket_opened",
        "ticket_id": "v-t1",
        "channel": "email",
        "priority": "normal",
    }
    return [
        click("a-view", 0, None, anonymous_id=ALIAS),
        click("a-identify", 1, VICTIM, anonymous_id=ALIAS, type="identify"),
        click("v-view", 2, VICTIM, type="product_view", product_id="p1"),
        order,
        ticket,
        click("v-late", 30, VICTIM),
        click("b-view", 2, BYSTANDER),
    ]  # fmt: skip


def occurrences(root: Path, needle: bytes, directory: Callable[[str], bool]) -> dict[str, int]:
    """Occurrences of ``needle`` in every file under ``root``'s matching top-level
    directories (deleted segments waiting for removal included), by file."""
    counts: dict[str, int] = {}
    for top in root.iterdir():
        if not top.is_dir() or not directory(top.name):
            continue
        for path in top.rglob("*"):
            try:
                found = path.read_bytes().count(needle) if path.is_file() else 0
            except FileNotFoundError:  # removed meanwhile
                continue
            if found:
                counts[str(path.relative_to(root))] = found
    return counts


def broker_log_dir(settings: Settings) -> Path:
    admin = admin_client(settings)
    try:
        described = admin.describe_log_dirs()
    finally:
        admin.close()
    text = orjson.dumps(described, default=str).decode()
    found = re.search(r'"(?:log_dir|path)":"([^"]+)"', text)
    if found is None or not Path(found.group(1)).is_dir():
        pytest.skip("the broker's log directory is not on this machine")
    return Path(found.group(1))


def poll(check: Callable[[], Any], timeout_s: float, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval_s)
        result = check()
    return result


def suppressed_count(worker: WorkerProcess) -> float:
    _, body = worker.get("/metrics")
    found = re.findall(rb'^segstream_suppressed_events_total\{topic="clickstream"\} (\S+)$',
                       body, re.MULTILINE)  # fmt: skip
    return float(found[0]) if found else 0.0


def test_erased_id_leaves_changelogs_rocksdb_and_requests_and_later_events_are_dropped(
    kafka_bootstrap: str,
    topic_prefix: str,
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        erasure_requests_retention_hours=REQUESTS_RETENTION_HOURS,
        # The worker's own settings: create_topics declares its changelogs too.
        erasure_bound_hours=BOUND_HOURS,
        changelog_topic_configs={"file.delete.delay.ms": "1000"},
    )
    create_topics(settings)
    log_dir = broker_log_dir(settings)
    worker = worker_factory(
        "w1",
        STORE="rocksdb",
        ERASURE_BOUND_HOURS=str(BOUND_HOURS),
        ERASURE_REQUESTS_RETENTION_HOURS=str(REQUESTS_RETENTION_HOURS),
        # Removed segments are deleted after 1 s, not the broker's 60 s.
        CHANGELOG_TOPIC_CONFIGS='{"file.delete.delay.ms": "1000"}',
        # Neither idle topic releases the held events during the test.
        REORDER_IDLE_S="600",
        INPUT_IDLE_S="600",
    )
    worker.wait_ready(120)
    app_id = worker.env["APP_ID"]
    data_dir = tmp_path / "w1" / "data"
    needle = VICTIM.encode()

    def changelogs(name: str) -> bool:
        return name.startswith(f"{app_id}-") and "-changelog-" in name

    def requests(name: str) -> bool:
        return name.startswith(f"{topic_prefix}erasure-requests-")

    def everywhere() -> dict[str, int]:
        return {**occurrences(log_dir, needle, changelogs), **occurrences(data_dir, needle, bool)}

    for _ in send_events(settings, history()):
        pass
    profile = poll(lambda: fetch_profile(worker, VICTIM), 60)
    assert profile is not None, worker.tail_log()
    assert poll(lambda: fetch_profile(worker, BYSTANDER), 30) is not None
    # Written at the next commits: profile, held events, deadline index, alias.
    held_dir = f"{app_id}-held-changelog-{partition_for_key(VICTIM, 4)}"
    kept = (held_dir, "-profiles-changelog-", "-identities-changelog-")
    poll(lambda: all(k in str(occurrences(log_dir, needle, changelogs)) for k in kept), 30)
    before = occurrences(log_dir, needle, changelogs)
    before_rocksdb = occurrences(data_dir, needle, bool)
    print(f"before erasure: changelogs {sum(before.values())} in {sorted(before)}")
    print(f"before erasure: rocksdb {sum(before_rocksdb.values())} in {sorted(before_rocksdb)}")
    assert any(held_dir in name for name in before), before  # held events were kept
    assert any("-profiles-changelog-" in name for name in before), before
    assert any("-identities-changelog-" in name for name in before), before  # the alias
    assert sum(before_rocksdb.values()) > 0

    status, body = worker.request(f"/customers/{VICTIM}", method="DELETE")
    assert status == 202
    request_id = orjson.loads(body)["request_id"]
    audits_topic = settings.topic_names()["erasure_audit"]
    # The customer's erasure and the alias's (same request id).
    audits = [
        orjson.loads(r.value)
        for r in read_topic(settings, audits_topic, expected=2)
        if orjson.loads(r.value)["request_id"] == request_id
    ]
    erased = sorted(item for audit in audits for item in audit["erased"])
    assert {"profile", "held_events", "identity", "segment_exits", "suppressed"} <= set(erased)
    assert "deadline_entry" in erased, erased
    assert VICTIM not in orjson.dumps(audits).decode()
    requests_before = occurrences(log_dir, needle, requests)
    assert sum(requests_before.values()) > 0
    erased_at = time.monotonic()

    # Consumers are told: an exit per segment the customer was in, then customer_erased.
    changes = [
        orjson.loads(r.value)
        for r in read_topic(settings, settings.topic_names()["segment_changes"], expected=1)
    ]
    mine = [c for c in changes if c["customer_id"] == VICTIM and c.get("change_kind") != "change"]
    exits = {c["dimension"]: c["from_segment"] for c in mine if c["change_kind"] == "exit"}
    assert exits == {dim: state["value"] for dim, state in profile["segments"].items()}
    assert exits, "the customer was in no segment; the exits would prove nothing"
    assert [c["change_kind"] for c in mine][-1] == "customer_erased"
    assert len({c["change_id"] for c in mine}) == len(mine)

    # A later event for the id is dropped and counted; no profile reappears.
    for _ in send_events(settings, [click("v-after", 45, VICTIM)]):
        pass
    assert poll(lambda: suppressed_count(worker) >= 1, 30), worker.tail_log()
    assert fetch_profile(worker, VICTIM) is None
    assert fetch_profile(worker, BYSTANDER) is not None

    # Within the bound: every changelog segment and RocksDB file is free of the id.
    after = poll(lambda: not everywhere(), 180) or everywhere()
    took = time.monotonic() - erased_at
    print(f"after erasure ({took:.0f} s): changelogs and rocksdb {after or 0}")
    assert after is True, after
    requests_after = poll(lambda: not occurrences(log_dir, needle, requests), 120)
    print(f"erasure requests: {sum(requests_before.values())} before, 0 after: {requests_after}")
    assert requests_after is True, occurrences(log_dir, needle, requests)
    assert worker.alive()
