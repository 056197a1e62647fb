"""Issue 15, item 2, on the real broker: a worker upgraded over a store the
previous layout wrote recovers it, and goes on from it.

``tests/fixtures/changelog_4d61bdd.jsonl`` holds the changelogs of a worker
at commit 4d61bdd (before the partition engine and ``models/state.py``):
each key's latest record, as compaction leaves it, of its five tables, with
what that worker served in a header line (see ``tests/fixtures/README.md``).
The test writes those records, byte for byte, into the changelog topics of a
new worker's app id and starts the worker on an empty RocksDB directory, so
everything it knows comes from the old changelogs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from models.engine import population_key
from models.pipeline import combined_bgnbd, customer_view, partition_population
from models.state import (
    PopulationState,
    Profile,
    malformed_deadline_entries,
    undeclared_event_keys,
    undeclared_identity_keys,
    undeclared_keys,
    undeclared_population_keys,
)
from models.training import ModelBundle
from streams.cli.process import WorkerProcess
from streams.partitioning import partition_for_key
from streams.producer import send_events
from streams.settings import Settings
from tests.conftest import await_event_counts, metric_total

FIXTURE = Path(__file__).parents[1] / "fixtures" / "changelog_4d61bdd.jsonl"
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class OldStore:
    """The fixture: what the old worker served, and its changelog records."""

    header: dict[str, Any]
    # {"table", "partition", "key", "value"}: keys and values are the
    # records' exact bytes as text (Faust's JSON serializers write UTF-8).
    records: list[dict[str, Any]]

    def table(self, name: str) -> dict[str, Any]:
        """A table's state as the old worker left it: ``{key: value}``, decoded."""
        return {
            orjson.loads(r["key"]): orjson.loads(r["value"])
            for r in self.records
            if r["table"] == name
        }


def load_old_store() -> OldStore:
    header, *records = (orjson.loads(line) for line in FIXTURE.read_bytes().splitlines())
    return OldStore(header["header"], records)


def click(event_id: str, ts_ms: int, **ids: str) -> dict[str, Any]:
    """A web page view at ``ts_ms``, for ``customer_id`` or ``anonymous_id``."""
    ts = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"topic": "clickstream", "schema_version": 1, "event_id": event_id, "ts": ts,
            "type": "page_view", "channel": "web", "page": "home", "duration_ms": 3000,
            "session_id": f"s-{event_id}", **ids}  # fmt: skip


def with_events(counts: dict[str, int], events: list[dict[str, Any]]) -> dict[str, int]:
    """``counts`` once ``events`` are counted too (pending events are clicks, no topic)."""
    total = Counter(counts)
    total.update(f"{e.get('topic', 'clickstream')}.{e['type']}" for e in events)
    return dict(total)


def write_changelogs(settings: Settings, old: OldStore) -> None:
    """The old records, into the same partitions of this app id's changelogs."""
    assert old.header["input_partitions"] == settings.input_partitions
    producer = KafkaProducer(**settings.kafka_python_config())
    try:
        for r in old.records:
            topic = f"{settings.app_id}-{r['table']}-changelog"
            producer.send(
                topic, key=r["key"].encode(), value=r["value"].encode(), partition=r["partition"]
            )
        producer.flush()
    finally:
        producer.close()


def test_old_changelog_holds_only_declared_state() -> None:
    """Every value the previous layout wrote is state ``models/state.py`` declares."""
    old = load_old_store()
    assert set(old.header["tables"]) == {r["table"] for r in old.records}
    profiles = old.table("profiles")
    assert set(profiles) == set(old.header["event_counts"])
    assert {c: undeclared_keys(p) for c, p in profiles.items() if undeclared_keys(p)} == {}
    # ... and holds every key the new code may read without a default.
    assert all(Profile.__required_keys__ <= p.keys() for p in profiles.values())
    populations = old.table("population")
    assert len(populations) == old.header["input_partitions"]
    assert [undeclared_population_keys(p) for p in populations.values()] == [set()] * 4
    assert all(PopulationState.__required_keys__ <= p.keys() for p in populations.values())
    held = old.table("held")
    assert {c: len(events) for c, events in held.items()} == old.header["held_counts"]
    assert [undeclared_event_keys(events) for events in held.values()] == [set()] * len(held)
    identities = old.table("identities")
    assert old.header["pending_anonymous_id"] in identities
    assert [undeclared_identity_keys(s) for s in identities.values()] == [set()] * len(identities)
    assert malformed_deadline_entries(old.table("deadlines")) == set()


def test_worker_upgraded_over_an_old_store_recovers_it_and_goes_on(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    old = load_old_store()
    header = old.header
    write_changelogs(settings, old)
    worker = worker_factory()  # RocksDB, an empty data directory
    worker.wait_ready()

    # (a) Every customer is served with the counts the old worker served.
    served = await_event_counts(worker, header["event_counts"])
    assert {c: p["as_of_ms"] for c, p in served.items()} == header["as_of_ms"]

    # (b) What is served is the new code's view of the old state, key for key:
    # the recovered state is the changelog's, read with the declared schema.
    profiles, populations = old.table("profiles"), old.table("population")
    as_of = max(p["watermark_ms"] for p in populations.values())
    bundle = ModelBundle(settings.learning_config())  # no snapshot: the cold-start models
    for customer_id, profile in served.items():
        partition = partition_for_key(customer_id, settings.input_partitions)
        view = customer_view(
            customer_id,
            profiles[customer_id],
            settings.profile_config(),
            as_of,
            partition_population(
                populations[population_key(partition)], combined_bgnbd(populations.values())
            ),
            settings.value_config(),
            bundle,
        )
        assert profile == orjson.loads(orjson.dumps(view)), customer_id

    # (c) It goes on: a redelivered event still in the customer's recent ids
    # is a duplicate, and a new one counts once.
    redelivery = header["redelivery"]
    customer = redelivery["customer_id"]
    assert redelivery["event_id"] in profiles[customer]["recent_ids"]
    end_ms = header["history_end_ms"]
    new_click = click("ev-upgrade-new", end_ms + 3 * HOUR_MS, customer_id=customer)
    send = [redelivery, new_click]
    # (d) Events the old worker held are released by the new one once the
    # partition's watermark passes them: the new click is 3 h after the
    # history, past the held clicks of a customer in the same partition.
    held_partner = next(
        c
        for c in header["held_counts"]
        if partition_for_key(c, settings.input_partitions)
        == partition_for_key(customer, settings.input_partitions)
    )
    # (e) Logged-out browsing the old worker kept pending counts for the
    # customer an identify names.
    anonymous_id = header["pending_anonymous_id"]
    pending = old.table("identities")[anonymous_id]["pending"]
    stitched = next(c for c in sorted(profiles) if c not in (customer, held_partner))
    identify = click("ev-upgrade-identify", end_ms + HOUR_MS, anonymous_id=anonymous_id)
    del identify["page"], identify["duration_ms"]
    send.append({**identify, "type": "identify", "customer_id": stitched})
    for _ in send_events(settings, send):
        pass

    deadline = time.monotonic() + 60
    duplicates = {"topic": redelivery["topic"]}
    while metric_total(worker, "segstream_duplicate_events_total", **duplicates) < 1:
        assert time.monotonic() < deadline, worker.tail_log(20)
        time.sleep(0.5)
    counts = header["event_counts"]
    expected = {
        customer: with_events(counts[customer], [new_click]),
        held_partner: with_events(counts[held_partner], old.table("held")[held_partner]),
        stitched: with_events(counts[stitched], pending),
    }
    await_event_counts(worker, expected, timeout_s=90)
    assert metric_total(worker, "segstream_duplicate_events_total") == 1
