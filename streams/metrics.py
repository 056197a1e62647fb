"""Prometheus metrics of a worker (prometheus-client), served at ``/metrics``.

Labels carry topics, event types and reasons — never customer ids or other
personal data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models import quantiles

registry = CollectorRegistry()

_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: the hot path counts per event,
    and prometheus-client's ``labels`` takes a lock and builds a key each call."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


events_consumed = Counter(
    "segstream_events_consumed",
    "Input events accepted, by topic role and event type.",
    ["topic", "type"],
    registry=registry,
)
events_processed = Counter(
    "segstream_events_processed",
    "Input events taken through the engine in event-time order (applied, or refused as "
    "duplicate, stale or late; anonymous clicks stitched), by topic role. Consumed minus "
    "processed and suppressed is what the input watermark still holds back.",
    ["topic"],
    registry=registry,
)
decode_failures = Counter(
    "segstream_decode_failures",
    "Input messages rejected at decoding, by topic role and reason.",
    ["topic", "reason"],
    registry=registry,
)
dead_letters = Counter(
    "segstream_dead_letters",
    "Records written to the dead-letter topic.",
    ["topic"],
    registry=registry,
)
duplicate_events = Counter(
    "segstream_duplicate_events",
    "Redelivered events (same event_id) that changed nothing.",
    ["topic"],
    registry=registry,
)
historical_triggers = Counter(
    "segstream_historical_triggers",
    "Triggers not sent because their moment was part of a backfill "
    "(replay --historical) and older than SEGSTREAM_HISTORICAL_AFTER_HOURS.",
    ["kind"],
    registry=registry,
)
capped_triggers = Counter(
    "segstream_capped_triggers",
    "Triggers not sent because the customer already had SEGSTREAM_TRIGGER_DAILY_CAP "
    "triggers in the last 24 hours of event time.",
    ["kind"],
    registry=registry,
)
stale_events = Counter(
    "segstream_stale_events",
    "Events not applied because they are older than the customer's deduplication memory "
    "(SEGSTREAM_DEDUP_WINDOW_HOURS behind the customer's latest event): a replay of "
    "history already applied, or an event that arrived that far out of order.",
    ["topic"],
    registry=registry,
)
late_events = Counter(
    "segstream_late_events",
    "Events for a day no profile window reaches any more (older than the longest window "
    "from the customer's latest event); counted in lifetime totals only.",
    ["topic"],
    registry=registry,
)
held_events = Counter(
    "segstream_held_events",
    "Events held until the partition's input watermark reached them (read ahead "
    "of another input topic), by topic role.",
    ["topic"],
    registry=registry,
)
held_released_early = Counter(
    "segstream_held_released_early",
    "Held events applied before the watermark reached them because a customer "
    "held more than REORDER_MAX_HELD.",
    registry=registry,
)
anonymous_events = Counter(
    "segstream_anonymous_events",
    "Anonymous clickstream events, by what happened to them.",
    ["outcome"],
    registry=registry,
)
erasures = Counter(
    "segstream_erasures",
    "Erasure requests carried out, by subject kind.",
    ["subject"],
    registry=registry,
)
suppressed_events = Counter(
    "segstream_suppressed_events",
    "Input events dropped because their customer (or anonymous id) was erased, by topic role.",
    ["topic"],
    registry=registry,
)
training_examples_sent = Counter(
    "segstream_training_examples_sent",
    "Training examples sent to the trainer, by kind (cluster, churn).",
    ["kind"],
    registry=registry,
)
training_examples_learned = Counter(
    "segstream_training_examples_learned",
    "Training examples the trainer on this worker learned, by kind.",
    ["kind"],
    registry=registry,
)
model_snapshots_rejected = Counter(
    "segstream_model_snapshots_rejected",
    "Model snapshots refused: HMAC not verified, or anything but a model bundle inside.",
    registry=registry,
)
population_repairs = Gauge(
    "segstream_population_repairs",
    "Values a profile had counted that its partition's population sketch did not hold, "
    "counted afresh since the worker started, by sketch (0 unless state was cut mid-commit).",
    ["sketch"],
    registry=registry,
)


def _repairs_of(sketch: str) -> Callable[[], float]:
    return lambda: float(quantiles.population_repairs[sketch])


for _sketch in ("rfm", "clv"):
    population_repairs.labels(_sketch).set_function(_repairs_of(_sketch))
model_version = Gauge(
    "segstream_model_version",
    "Version of the model snapshot this worker scores with.",
    registry=registry,
)
model_examples = Gauge(
    "segstream_model_examples",
    "Training examples behind the model this worker scores with.",
    registry=registry,
)
churn_roc_auc = Gauge(
    "segstream_churn_roc_auc",
    "Rolling ROC AUC of churn scores against resolved labels (NaN until both classes).",
    registry=registry,
)
churn_log_loss = Gauge(
    "segstream_churn_log_loss",
    "Rolling log loss of churn scores against resolved labels.",
    registry=registry,
)
churn_lift = Gauge(
    "segstream_churn_auc_lift",
    "Churn model's rolling exact ROC AUC less the best baseline's (recency alone, the "
    "BG/NBD probability) on the same labels; below 0 the model ranks worse than a baseline.",
    registry=registry,
)
churn_rate = Gauge(
    "segstream_churn_rate_ratio",
    "Share of resolved labels that were churn, over the quality window.",
    registry=registry,
)
churn_labels = Gauge(
    "segstream_churn_labels",
    "Resolved churn labels behind the model, by label.",
    ["label"],
    registry=registry,
)
churn_drifts = Gauge(
    "segstream_churn_rate_drifts",
    "ADWIN drift alarms on the churn label stream.",
    registry=registry,
)
cluster_size = Gauge(
    "segstream_cluster_size",
    "Recent training examples per behavioural cluster.",
    ["cluster", "persona"],
    registry=registry,
)


def observe_models(description: dict[str, Any]) -> None:
    """Set the model gauges from :meth:`models.training.ModelBundle.describe`."""
    nan = float("nan")
    quality = description["churn"]["quality"]
    model_version.set(description["version"])
    model_examples.set(description["examples"])
    churn_roc_auc.set(nan if quality["roc_auc"] is None else quality["roc_auc"])
    churn_log_loss.set(nan if quality["log_loss"] is None else quality["log_loss"])
    churn_lift.set(nan if quality["lift"] is None else quality["lift"])
    churn_rate.set(nan if quality["churn_rate"] is None else quality["churn_rate"])
    churn_drifts.set(quality["churn_rate_drifts"])
    for label, count in description["churn"]["labels"].items():
        churn_labels.labels(label).set(count)
    cluster_size.clear()
    for cluster in description["clusters"]:
        cluster_size.labels(str(cluster["cluster_id"]), str(cluster["persona"])).set(
            cluster["recent_size"]
        )


segment_changes = Counter(
    "segstream_segment_changes",
    "Segment changes published, by dimension and the segment entered.",
    ["dimension", "segment"],
    registry=registry,
)
triggers = Counter(
    "segstream_triggers",
    "Triggers published for notification services, by kind.",
    ["kind"],
    registry=registry,
)
outbox_records = Counter(
    "segstream_outbox_records",
    "Records sent in batches straight to the producer (changelogs and outputs), by topic.",
    ["topic"],
    registry=registry,
)
outbox_batches = Counter(
    "segstream_outbox_batches",
    "Record batches handed to the producer by the outbox.",
    registry=registry,
)
change_lag = Histogram(
    "segstream_segment_change_lag_seconds",
    "Event time of a segment change to its publication (wall clock); large in a backfill.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 86400, float("inf")),
    registry=registry,
)
segment_population = Gauge(
    "segstream_segment_population",
    "Customers per segment, over this worker's partitions, by dimension and segment.",
    ["dimension", "segment"],
    registry=registry,
)


def observe_segments(counts: dict[str, dict[str, int]]) -> None:
    """Set the segment population gauge from per-dimension counts."""
    segment_population.clear()
    for dimension, by_value in counts.items():
        for segment, count in by_value.items():
            segment_population.labels(dimension, segment).set(count)


event_lag = Histogram(
    "segstream_event_lag_seconds",
    "Wall clock at processing minus the event's own time, by input topic (large in a backfill).",
    ["topic"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 7 * 86400, float("inf")),
    registry=registry,
)
consumer_lag = Gauge(
    "segstream_consumer_lag_messages",
    "Messages not yet read, per assigned topic partition (high-water mark minus position).",
    ["topic", "partition"],
    registry=registry,
)
customers = Gauge(
    "segstream_customers",
    "Customers with a profile in this worker's partitions.",
    registry=registry,
)
cache_entries = Gauge(
    "segstream_state_cache_entries",
    "Entries in the write-back state caches, by table.",
    ["table"],
    registry=registry,
)
