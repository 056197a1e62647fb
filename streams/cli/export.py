"""``segstream export-profiles``: every current profile, for warehouses and BI tools.

The export reads the workers' state where it is durable — the compacted
changelog topics of the profiles and population tables, and the newest model
snapshot — so it needs no running worker and puts no load on one. Each
customer is described exactly as ``GET /customers/{id}`` describes them
(:func:`models.pipeline.customer_view`), as of the newest event time any
partition has processed.

Formats: JSONL (the full profile per line) or CSV (one row per customer with
the columns marketers filter on; nested values flattened by path).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import orjson
from kafka import TopicPartition

from models.audiences import audience_dimension
from models.engine import population_key
from models.pipeline import combined_bgnbd, customer_view, partition_population
from models.segments import DIMENSIONS
from models.training import ModelBundle, SnapshotError, decode_snapshot
from schemas.errors import ConfigError, SegstreamError
from streams.partitioning import partition_for_key
from streams.producer import make_consumer
from streams.settings import Settings

ExportFormat = Literal["jsonl", "csv"]

CSV_COLUMNS = (
    "customer_id",
    "as_of_ms",
    "first_seen_ms",
    "last_seen_ms",
    "events",
    "lifetime.orders",
    "lifetime.revenue",
    "lifetime.gross_revenue",
    "lifetime.aov",
    "lifetime.sessions",
    "purchases.recency_days",
    "rfm.score",
    "value.clv_simple",
    "value.clv_model",
    "value.p_alive",
    "value.expected_purchases_365d",
    "value.clv_365d",
    "value.next_order_expected_ms",
    "support.open_tickets",
    "support.nps_category",
    "scores.churn_probability",
    "scores.cluster_id",
    "scores.persona",
    "scores.model_version",
    *(f"segments.{dim}" for dim in DIMENSIONS),
    # the user's audiences the customer is in now, space-separated (with a definitions file)
    "audiences",
)


class ExportError(SegstreamError):
    """The state topics could not be read."""


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's changelog topic name of one of our tables."""
    return f"{settings.app_id}-{table}-changelog"


def read_compacted(settings: Settings, topic: str, timeout_ms: int = 10_000) -> dict[bytes, bytes]:
    """The latest value of every key of ``topic``, read from the beginning to its end now."""
    consumer = make_consumer(settings, group_id=None, consumer_timeout_ms=timeout_ms)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ExportError(f"topic {topic} does not exist (has a worker run?)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            polled = consumer.poll(timeout_ms=timeout_ms)
            if not polled:
                raise ExportError(f"timed out reading {topic}")
            for tp, records in polled.items():
                for record in records:
                    if record.value is None:
                        latest.pop(record.key, None)  # a tombstone: deleted (erased)
                    else:
                        latest[record.key] = record.value
                    if record.offset + 1 >= end[tp]:
                        pending.discard(tp)
        return latest
    finally:
        consumer.close()


def latest_models(settings: Settings) -> ModelBundle:
    """The newest model snapshot that verifies, or an untrained bundle."""
    key = settings.model_snapshot_key.get_secret_value().encode()
    best = ModelBundle(settings.learning_config())
    topic = settings.topic_names()["model_snapshots"]
    for value in read_compacted(settings, topic).values():
        try:
            bundle = decode_snapshot(value, key)
        except SnapshotError:
            continue
        if bundle.version > best.version:
            best = bundle
    return best


def current_profiles(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every customer's profile as the workers hold it now, in customer-id order."""
    profiles = read_compacted(settings, changelog_topic(settings, "profiles"))
    populations = {
        _table_key(k): orjson.loads(v)
        for k, v in read_compacted(settings, changelog_topic(settings, "population")).items()
    }
    as_of = max((int(p.get("watermark_ms", 0)) for p in populations.values()), default=None)
    models = latest_models(settings)
    profile_config = settings.profile_config()
    value_config = settings.value_config()
    segment_config = settings.segment_config()
    definitions = settings.definitions()
    pooled = combined_bgnbd(populations.values())
    for key in sorted(profiles):
        customer_id = _table_key(key)
        partition = partition_for_key(customer_id, settings.input_partitions)
        yield customer_view(
            customer_id,
            orjson.loads(profiles[key]),
            profile_config,
            as_of,
            partition_population(populations.get(population_key(partition)), pooled),
            value_config,
            models,
            segment_config,
            definitions,
        )


def _table_key(raw: bytes) -> str:
    # Table keys are JSON strings on the changelog (Faust's key serializer).
    decoded = orjson.loads(raw) if raw.startswith(b'"') else raw.decode()
    return str(decoded)


def _path(view: dict[str, Any], path: str) -> Any:
    value: Any = view
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict) and "value" in value:
        value = value["value"]  # a segment: its current value
    if isinstance(value, list):
        value = " ".join(map(str, value))
    return value


def write_profiles(rows: Iterator[dict[str, Any]], out: IO[bytes], fmt: ExportFormat) -> int:
    """Write profiles as JSONL or CSV; return how many."""
    count = 0
    if fmt == "jsonl":
        for view in rows:
            out.write(orjson.dumps(view) + b"\n")
            count += 1
        return count
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for view in rows:
        writer.writerow([_path(view, column) for column in CSV_COLUMNS])
        count += 1
    text.flush()
    text.detach()  # leave ``out`` open for the caller
    return count


def export_profiles(
    settings: Settings, out: Path, fmt: ExportFormat, audience: str | None = None
) -> int:
    """Export every current profile to ``out`` (with ``audience``, only its
    members as last decided); return how many.

    Raises
    ------
    ConfigError
        If ``audience`` is not one of the definitions file's audiences.
    """
    profiles = current_profiles(settings)
    if audience is not None:
        definitions = settings.definitions()
        if definitions is None or audience not in definitions.audiences:
            known = sorted(definitions.audiences) if definitions is not None else []
            raise ConfigError(f"no audience {audience!r} in the definitions file (known: {known})")
        dim = audience_dimension(audience)
        profiles = (p for p in profiles if p["segments"].get(dim, {}).get("value") == "in")
    with out.open("wb") as handle:
        return write_profiles(profiles, handle, fmt)
