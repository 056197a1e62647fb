"""``segstream evaluate``: the worker's engine over a history file, no broker.

Every event goes the way it goes in the worker — the same encoding and
keying as our producers, ``decode_event``, then the :class:`PartitionEngine`
of its partition over an in-memory store — so a profile written here equals
the one a single worker serves after consuming the same history
(``tests/integration/test_profiles_and_recovery.py`` compares them). A file
is one ordered input: everything before a line has been read when it is
applied, so the watermarks are the latest event time so far.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
from river import metrics

from models.audiences import audience_dimension
from models.engine import (
    Outputs,
    PartitionEngine,
    PartitionStores,
    Watermarks,
    population_key,
)
from models.evaluation import exact_auc
from models.pipeline import (
    PopulationState,
    combined_bgnbd,
    customer_view,
    new_population,
    partition_population,
)
from models.profile import DAY_MS, Profile
from models.simulator import CustomerTruth
from models.training import ModelBundle
from schemas.decode import DecodeError, decode_event
from schemas.event_time import parse_event_time
from streams.partitioning import partition_for_key
from streams.producer import encode_event
from streams.settings import Settings

ROLES = ("clickstream", "purchases", "support")


@dataclass
class OfflineRun:
    """An offline replay: one engine per input partition, as one worker holding all."""

    settings: Settings
    rejected: dict[str, int] = field(default_factory=dict)
    # The latest event time of a customer event, and the input watermark
    # (``None`` until the first customer event).
    watermark_ms: int = 0
    input_watermark_ms: int | None = None
    # Everything the engines published, in order.
    outputs: Outputs = field(default_factory=Outputs)

    def __post_init__(self) -> None:
        self._limits = self.settings.decode_limits()
        # One process plays every worker and the trainer: examples are learned
        # as soon as they are produced, and scores use the model as it is then.
        self.models = ModelBundle(self.settings.learning_config())
        config = self.settings.engine_config()
        self.definitions = config.definitions
        self.engines = {
            p: PartitionEngine(p, PartitionStores.in_memory(), config, lambda: self.models)
            for p in range(self.settings.input_partitions)
        }

    @property
    def profiles(self) -> dict[str, Profile]:
        """Every customer's profile state."""
        merged: dict[str, Profile] = {}
        for engine in self.engines.values():
            merged.update(engine.stores.profiles.data)  # type: ignore[attr-defined]
        return merged

    @property
    def populations(self) -> dict[int, PopulationState]:
        """Every partition's population (an empty one where nothing happened)."""
        return {
            p: engine.stores.population.get(population_key(p)) or new_population()
            for p, engine in self.engines.items()
        }

    def feed(self, line: dict[str, Any]) -> None:
        """Process one event line (simulator/replay format, with ``"topic"``)."""
        role, key, value = encode_event(line)
        if role not in ROLES:
            return
        try:
            record = decode_event(role, key, value, self._limits, time.time_ns() // 1_000_000)
        except DecodeError as exc:
            self.rejected[exc.kind] = self.rejected.get(exc.kind, 0) + 1
            return
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        partition = partition_for_key((key or b"").decode(), self.settings.input_partitions)
        stitching = role == "clickstream" and (
            fields.get("customer_id") is None or fields.get("type") == "identify"
        )
        if stitching:
            # Identity stitching moves no watermark.
            now = self.input_watermark_ms or 0
        else:
            self.watermark_ms = max(self.watermark_ms, int(record.ts))
            now = max(self.input_watermark_ms or 0, int(record.ts))
            self.input_watermark_ms = now
        marks = Watermarks.up_to(now)
        step = self.engines[partition].submit([fields], marks)
        if not stitching:
            for p, engine in self.engines.items():
                if p != partition:
                    step.extend(engine.advance(marks))
        self._publish(step)
        for fields in step.rekeyed:
            self.feed({"topic": "clickstream", **fields})

    def advance_to(self, ts_ms: int) -> None:
        """Event time reaches ``ts_ms`` with no further event.

        Every engine fires its deadlines up to ``ts_ms`` — quiet ticks,
        resolved churn labels, time-driven segment changes — as a worker's
        engines do once their watermark passes it.
        """
        if self.input_watermark_ms is not None and ts_ms <= self.input_watermark_ms:
            return
        self.input_watermark_ms = ts_ms
        step = Outputs()
        for engine in self.engines.values():
            step.extend(engine.advance(Watermarks.up_to(ts_ms)))
        self._publish(step)

    def _publish(self, step: Outputs) -> None:
        for example in step.examples:
            self.models.learn(example)
        step.examples.clear()
        step.rekeyed, rekeyed = [], step.rekeyed
        self.outputs.extend(step)
        step.rekeyed = rekeyed

    def summaries(self, as_of_ms: int | None = None) -> Iterator[dict[str, Any]]:
        """Every customer's profile as of ``as_of_ms`` (default: the last event)."""
        as_of = self.watermark_ms if as_of_ms is None else as_of_ms
        value_config = self.settings.value_config()
        config = self.settings.profile_config()
        segments = self.settings.segment_config()
        populations = self.populations
        pooled = combined_bgnbd(populations.values())
        held = []
        for partition, engine in self.engines.items():
            population = partition_population(populations[partition], pooled)
            profiles = engine.stores.profiles.data  # type: ignore[attr-defined]
            held += [
                (customer_id, profile, population) for customer_id, profile in profiles.items()
            ]
        for customer_id, profile, population in sorted(held, key=lambda item: item[0]):
            yield customer_view(
                customer_id,
                profile,
                config,
                as_of,
                population,
                value_config,
                self.models,
                segments,
                self.definitions,
            )


def score_against_truth(
    profiles: Iterable[dict[str, Any]], truth: Iterable[CustomerTruth]
) -> dict[str, Any]:
    """How well the models recovered what the simulator planted.

    ``adjusted_rand_index`` compares cluster ids with the planted personas;
    ``churn_roc_auc`` ranks every customer's churn probability against
    whether they were planted as fading (``truth.churns``), exactly (every
    threshold); ``recency_roc_auc`` ranks days since the last event the same
    way, the trivial baseline beside it.
    """
    by_id = {p["customer_id"]: p for p in profiles}
    ari = metrics.AdjustedRand()
    labels: list[int] = []
    churn: list[float] = []
    recency: list[float] = []
    for customer in truth:
        profile = by_id.get(customer.customer_id)
        if profile is None:
            continue
        scores = profile["scores"]
        if scores["cluster_id"] is not None:
            ari.update(customer.persona, scores["cluster_id"])
        labels.append(int(customer.churns))
        churn.append(float(scores["churn_probability"]))
        recency.append(float(profile["days_since_last_seen"] or 0.0))
    auc, recency_auc = exact_auc(labels, churn), exact_auc(labels, recency)
    return {
        "customers": len(labels),
        "adjusted_rand_index": round(float(ari.get()), 4),
        "churn_roc_auc": None if auc is None else round(auc, 4),
        "recency_roc_auc": None if recency_auc is None else round(recency_auc, 4),
    }


def evaluate(
    lines: Iterable[dict[str, Any]], settings: Settings, cutoff_ms: int | None = None
) -> OfflineRun:
    """Replay ``lines`` (in file order) up to ``cutoff_ms``; return the run.

    With a cutoff, event time then moves on to it: the deadlines between the
    last event and the cutoff fire, so the run is what a worker would hold
    once its watermark reached the cutoff.
    """
    run = OfflineRun(settings)
    for line in lines:
        if cutoff_ms is not None and "ts" in line and parse_event_time(line["ts"]) > cutoff_ms:
            continue
        run.feed(line)
    if cutoff_ms is not None:
        run.advance_to(cutoff_ms)
    return run


def write_outputs(run: OfflineRun, path: Path) -> tuple[int, int]:
    """Write the segment changes and triggers ``run`` published, as JSON Lines.

    One record per line, as it would be on its topic, with ``"output"`` naming
    which (``segment_change`` or ``trigger``): the changes in the order they
    were published, then the triggers. Returns ``(changes, triggers)``.
    """
    with path.open("wb") as handle:
        for output, records in (
            ("segment_change", run.outputs.changes),
            ("trigger", run.outputs.triggers),
        ):
            for record in records:
                handle.write(orjson.dumps({"output": output, **record}) + b"\n")
    return len(run.outputs.changes), len(run.outputs.triggers)


def audience_backtest(
    changes: Iterable[Mapping[str, Any]], audiences: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """What each audience did, day by day, from the segment changes of a run.

    Per audience, one row per UTC day from the first change of the run to
    the last: the members at the end of the day (``size``), and how many
    entered and left that day. Customers enter with a change to ``in`` and
    leave with one to ``out``, as a consumer of the segment-changes topic
    counts them.

    >>> rows = audience_backtest(
    ...     [{"dimension": "audience.vip", "customer_id": "c1", "to_segment": "in", "ts": 0},
    ...      {"dimension": "audience.vip", "customer_id": "c1", "to_segment": "out",
    ...       "ts": 2 * 86_400_000}], ["vip"])
    >>> [(r["day"], r["size"], r["entered"], r["exited"]) for r in rows["vip"]]
    [('1970-01-01', 1, 1, 0), ('1970-01-02', 1, 0, 0), ('1970-01-03', 0, 0, 1)]
    """
    names = list(audiences)
    wanted = {audience_dimension(name): name for name in names}
    by_day: dict[str, dict[int, list[int]]] = {name: {} for name in names}
    days: list[int] = []
    for change in changes:
        name = wanted.get(str(change["dimension"]))
        if name is None:
            continue
        day = int(change["ts"]) // DAY_MS
        days.append(day)
        counts = by_day[name].setdefault(day, [0, 0])
        if change["to_segment"] == "in":
            counts[0] += 1
        else:
            counts[1] += 1
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if not days:
        return out
    for name in names:
        size = 0
        for day in range(min(days), max(days) + 1):
            entered, exited = by_day[name].get(day, (0, 0))
            size += entered - exited
            out[name].append(
                {
                    "day": datetime.fromtimestamp(day * 86_400, tz=UTC).date().isoformat(),
                    "size": size,
                    "entered": entered,
                    "exited": exited,
                }
            )
    return out
