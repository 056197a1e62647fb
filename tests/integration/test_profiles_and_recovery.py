"""Issue 4 on the real broker: live profiles equal the offline path; state
survives kill -9, graceful restarts, rebalances and recovery from compacted
changelogs; erasure removes a customer everywhere."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from rocksdict import Options, Rdict

from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time
from streams.cli.admin import create_topics
from streams.cli.process import WorkerProcess
from streams.offline import evaluate
from streams.partitioning import partition_for_key
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import await_event_counts, fetch_profile, read_topic, settled_profiles
from tests.integration.helpers import expected_counts

MODEL_FIELDS = (
    "expected_purchases_90d",
    "clv_model",
    "p_alive",
    "expected_purchases_365d",
    "clv_365d",
    "next_order_median_days_if_active",
)
# Null when P(alive) < 0.5: live and offline may fall either side of it.
THRESHOLDED_FIELDS = ("next_order_expected_ms",)


def history(customers: int, seed: int, days: int = 30) -> list[dict[str, Any]]:
    events, _ = simulate(
        SimConfig(customers=customers, days=days, seed=seed, start=datetime(2026, 3, 1, tzinfo=UTC))
    )
    return events


def send(settings: Settings, events: list[dict[str, Any]]) -> None:
    for _ in send_events(settings, events):
        pass


def assert_same_profile(live: dict[str, Any], offline: dict[str, Any]) -> None:
    """Equal, except model outputs, which depend on the order models learned in.

    Model-based CLV must agree within a tolerance; model scores (churn,
    cluster) come from whichever snapshot was current, so only their shape
    is compared — the features they are computed from must be equal.
    """
    live_value, offline_value = dict(live["value"]), dict(offline["value"])
    assert set(live["scores"]) == set(offline["scores"])
    # Segments that follow facts must agree; the others depend on model
    # scores, population sketches or dwell timing (README, known limitations).
    for dimension in ("lifecycle", "nps_category"):
        a, b = live["segments"].get(dimension), offline["segments"].get(dimension)
        assert (a or {}).get("value") == (b or {}).get("value"), dimension
    skip = ("value", "scores", "segments", "churn_features")
    rest = {k: v for k, v in live.items() if k not in skip}
    assert rest == {k: v for k, v in offline.items() if k not in skip}, diff(live, offline)
    # The churn inputs are facts but for the BG/NBD fit's log-odds (model output).
    live_churn, offline_churn = dict(live["churn_features"]), dict(offline["churn_features"])
    logits = live_churn.pop("bgnbd_churn_logit"), offline_churn.pop("bgnbd_churn_logit")
    assert live_churn == offline_churn
    assert logits[0] == pytest.approx(logits[1], abs=0.5)
    for name in THRESHOLDED_FIELDS:
        live_value.pop(name), offline_value.pop(name)
    for name in MODEL_FIELDS:
        a, b = live_value.pop(name), offline_value.pop(name)
        assert (a is None) == (b is None)
        if a is None:
            continue
        if name == "next_order_median_days_if_active":
            # A far quantile of the fit, (α+T)·(2^(1/(r+x)) − 1): it amplifies
            # the parameters' learning-order differences (1.36x twice and
            # 1.55x seen in CI), so only its presence is compared;
            # its value is checked against known parameters in
            # tests/unit/test_purchase_process.py.
            assert a >= 0 and b >= 0, name
            continue
        assert a == pytest.approx(b, rel=0.35, abs=0.05), name
    assert live_value == offline_value


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ, with both values (for failure messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += diff(a.get(key), b.get(key), f"{path}.{key}")
        return out
    return [] if a == b else [f"{path}: live={a!r} offline={b!r}"]


def test_live_profiles_equal_offline_evaluate(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events = history(100, seed=41)
    worker = worker_factory()
    worker.wait_ready()
    send(settings, events)
    offline = {p["customer_id"]: p for p in evaluate(events, settings).summaries()}
    as_of = next(iter(offline.values()))["as_of_ms"]
    live = settled_profiles(worker, expected_counts(events), as_of)
    assert set(live) == set(offline)
    for customer_id, profile in live.items():
        assert_same_profile(profile, offline[customer_id])


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events = history(120, seed=42)
    thirds = [events[: len(events) // 3], events[len(events) // 3 : 2 * len(events) // 3]]
    thirds.append(events[2 * len(events) // 3 :])
    worker = worker_factory("w1")
    worker.wait_ready()
    for part in thirds[:2]:
        send(settings, part)
        time.sleep(1.5)  # mid-stream: some processed, some committed, some not
        worker.kill()
        worker = worker_factory("w1")  # same data dir and consumer group
        worker.wait_ready()
    send(settings, thirds[2])
    offline = {p["customer_id"]: p for p in evaluate(events, settings).summaries()}
    as_of = next(iter(offline.values()))["as_of_ms"]
    live = settled_profiles(worker, expected_counts(events), as_of)
    # Counts, purchases, RFM and support state are exact after the crashes.
    # Session conversion can still differ after a restart (a known gap: see
    # the README's "Known limitations"), so derived session rates are not
    # compared here; the crash-free test above compares everything.
    for customer_id, profile in live.items():
        expected = offline[customer_id]
        for field in ("event_counts", "purchases", "rfm", "support", "first_seen_ms"):
            assert profile[field] == expected[field], (customer_id, field)
        for metric in ("orders", "revenue", "refunds", "page_views", "email_ctr", "carts_started"):
            assert profile["lifetime"][metric] == expected["lifetime"][metric], metric


def test_a_worker_killed_between_two_tables_writes_restores_them_from_the_changelog(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Any
) -> None:
    events = history(120, seed=46)
    half = len(events) // 2
    worker = worker_factory("w1")
    worker.wait_ready()
    send(settings, events[:half])
    await_event_counts(worker, expected_counts(events[:half]))
    worker.stop()  # every table written and in the changelog
    # What a kill between the profiles' write and the population's leaves in
    # partition 0: profiles that counted their values into a population that
    # does not hold them. Trusted as it is, the next decision of any of
    # those customers takes a value out of an empty sketch and the worker
    # stops on every batch.
    tables = tmp_path / "w1" / "data" / "v1" / "tables"
    population = Rdict(str(tables / "population-0.db"), options=Options(raw_mode=True))
    counted = [key for key in population.keys() if not key.startswith(b"__faust")]
    assert counted, "partition 0 has no population: the test would prove nothing"
    for key in counted:
        del population[key]
    population.close()
    (tmp_path / "w1" / "data" / "flush-in-progress").write_text("0\n")
    worker = worker_factory("w1")
    worker.wait_ready(180)
    assert "removed their local files" in worker.tail_log(400)
    send(settings, events[half:])
    offline = {p["customer_id"]: p for p in evaluate(events, settings).summaries()}
    as_of = next(iter(offline.values()))["as_of_ms"]
    live = settled_profiles(worker, expected_counts(events), as_of)
    assert worker.alive(), worker.tail_log(60)
    assert set(live) == set(offline)
    for customer_id, profile in live.items():
        expected = offline[customer_id]
        for field in ("event_counts", "purchases", "rfm", "support"):
            assert profile[field] == expected[field], (customer_id, field)
        for dimension in ("lifecycle", "rfm_segment", "nps_category"):
            live_segment = profile["segments"].get(dimension) or {}
            offline_segment = expected["segments"].get(dimension) or {}
            assert live_segment.get("value") == offline_segment.get("value"), dimension


def test_graceful_stop_and_start_resumes_where_it_left_off(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events = history(60, seed=43)
    worker = worker_factory("w1")
    worker.wait_ready()
    send(settings, events[: len(events) // 2])
    time.sleep(2)
    worker.stop()
    worker = worker_factory("w1")
    worker.wait_ready()
    send(settings, events[len(events) // 2 :])
    await_event_counts(worker, expected_counts(events))


def test_rebalance_between_two_workers_keeps_every_profile_exact(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events = history(80, seed=44)
    first = worker_factory("w1")
    first.wait_ready()
    send(settings, events[: len(events) // 2])
    second = worker_factory("w2")
    time.sleep(1)
    send(settings, events[len(events) // 2 :])
    second.wait_ready()
    first.wait_ready()
    expected = expected_counts(events)
    # Each worker answers for every customer: Faust routes to the owner.
    await_event_counts(first, expected)
    await_event_counts(second, expected)


def test_recovery_from_compacted_changelog_with_empty_partitions(
    settings: Settings, worker_factory: Callable[..., WorkerProcess], tmp_path: Any
) -> None:
    # Only customers of partitions 0 and 1: the other changelog partitions stay empty.
    events = [
        e
        for e in history(120, seed=45)
        if "customer_id" in e and partition_for_key(e["customer_id"], 4) in (0, 1)
    ]
    configs = {
        "segment.ms": "500",
        "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "0",
    }
    aggressive = orjson.dumps(configs).decode()
    # The fixture declared the changelogs with the defaults: set these on them,
    # as `segstream topics create` does on an existing deployment.
    create_topics(settings.model_copy(update={"changelog_topic_configs": configs}))
    worker = worker_factory("w1", CHANGELOG_TOPIC_CONFIGS=aggressive)
    worker.wait_ready()
    # In chunks a commit interval apart, so each profile is written many times.
    chunk = len(events) // 6 + 1
    for start in range(0, len(events), chunk):
        send(settings, events[start : start + chunk])
        time.sleep(3)
    expected = expected_counts(events)
    await_event_counts(worker, expected)
    changelog = f"{worker.env['APP_ID']}-profiles-changelog"
    records: list[Any] = []
    gaps = False
    trickle = [e for e in events if e["topic"] == "clickstream" and "customer_id" in e][:60]
    end_ms = max(parse_event_time(e["ts"]) for e in events)
    for i, event in enumerate(trickle):
        # New writes roll segments, so the cleaner may compact the old ones.
        # (New events, after the history: an old time would be stale.)
        send(settings, [dict(event, event_id=f"trickle-{i}", ts=end_ms + i * 1000)])
        expected[event["customer_id"]][f"clickstream.{event['type']}"] += 1
        time.sleep(1)
        records = read_topic(settings, changelog, expected=1, timeout_s=5)
        offsets = sorted((r.partition, r.offset) for r in records)
        gaps = any(b[0] == a[0] and b[1] != a[1] + 1 for a, b in itertools.pairwise(offsets))
        if gaps:
            break
    assert gaps, "the changelog was never compacted; the test would prove nothing"
    assert {r.partition for r in records} <= {0, 1}
    worker.kill()
    shutil.rmtree(tmp_path / "w1" / "data")  # nothing local: recover from the changelog alone
    worker = worker_factory("w1", CHANGELOG_TOPIC_CONFIGS=aggressive)
    worker.wait_ready(180)
    await_event_counts(worker, expected, timeout_s=60)


def test_erasure_removes_the_customer_and_is_audited_without_personal_data(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    events = history(30, seed=46)
    worker = worker_factory()
    worker.wait_ready()
    send(settings, events)
    expected = expected_counts(events)
    await_event_counts(worker, expected)
    victim = sorted(expected)[0]
    status, body = worker.request(f"/customers/{victim}", method="DELETE")
    assert status == 202
    request_id = orjson.loads(body)["request_id"]
    deadline = time.monotonic() + 30
    while fetch_profile(worker, victim) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fetch_profile(worker, victim) is None
    audits = [
        orjson.loads(r.value)
        for r in read_topic(settings, settings.topic_names()["erasure_audit"], 1)
    ]
    audit = next(a for a in audits if a["request_id"] == request_id)
    assert "profile" in audit["erased"]
    assert victim not in orjson.dumps(audit).decode()
    # A malformed erasure request is a dead letter with its reason, not a crash.
    from streams.producer import make_producer

    producer = make_producer(settings)
    erasures = settings.topic_names()["erasure_requests"]
    producer.send(erasures, key=b"c1", value=b"{not json")
    producer.send(erasures, key=b"someone-else", value=b'{"request_id": "r9", "customer_id": "c1"}')
    producer.flush()
    producer.close()
    letters = [
        orjson.loads(r.value)
        for r in read_topic(settings, settings.topic_names()["dead_letters"], expected=2)
    ]
    assert sorted(letter["error_kind"] for letter in letters) == ["key_mismatch", "wrong_type"]
    assert all(letter["source_topic"] == erasures for letter in letters)
    assert worker.alive()
    # Others are untouched, and the erased customer stays gone after a restart.
    other = sorted(expected)[1]
    assert fetch_profile(worker, other) is not None
    worker.stop()
    worker = worker_factory()
    worker.wait_ready()
    assert fetch_profile(worker, victim) is None
    assert fetch_profile(worker, other) is not None
