"""``segstream evaluate``: the worker's logic over a history file, no broker.

Every event goes through the same functions the worker calls — the same
encoding and keying as our producers, ``decode_event``, identity stitching,
``update_customer`` per input partition, ``summarise`` — so a profile
written here equals the one a single worker serves after consuming the same
history (``tests/integration/test_profiles.py`` compares them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from river import metrics

from models.deadlines import DeadlineIndex, DictStore
from models.identity import apply_anonymous
from models.moments import Moments
from models.pipeline import (
    PopulationState,
    combined_bgnbd,
    combined_rfm,
    customer_view,
    fire_deadlines,
    new_population,
    refile_deadline,
    update_customer,
)
from models.profile import DAY_MS, Profile
from models.profile_summary import Population
from models.segments import Segmenter
from models.sentiment import compound
from models.simulator import CustomerTruth
from models.training import ModelBundle
from schemas.decode import DecodeError, decode_event
from schemas.event_time import parse_event_time
from schemas.records import ClickEvent
from streams.partitioning import partition_for_key
from streams.producer import encode_event
from streams.settings import Settings


@dataclass
class OfflineRun:
    """State of an offline replay: what a worker holding every partition would hold."""

    settings: Settings
    profiles: dict[str, Profile] = field(default_factory=dict)
    identities: dict[str, Any] = field(default_factory=dict)
    populations: dict[int, PopulationState] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    watermark_ms: int = 0
    input_watermark_ms: int | None = None

    def __post_init__(self) -> None:
        self._limits = self.settings.decode_limits()
        self._profile_config = self.settings.profile_config()
        model_config = self.settings.learning_config()
        # One process plays every worker and the trainer: examples are learned
        # as soon as they are produced, and scores use the model as it is then.
        self.models = ModelBundle(model_config)
        self.moments = Moments(
            scorer=self.models,
            horizon_ms=int(model_config.horizon_days * DAY_MS),
            profile_config=self._profile_config,
            id_key=self.settings.model_snapshot_key.get_secret_value().encode(),
            sample_rate=self.settings.training_sample_rate,
        )
        self.segments = Segmenter(
            config=self.settings.segment_config(),
            profile_config=self._profile_config,
            scorer=self.models,
            id_key=self.moments.id_key,
        )
        self._deadline_store = DictStore()
        self._deadlines = {
            p: DeadlineIndex(self._deadline_store, p, self.settings.deadline_bucket_s * 1000)
            for p in range(self.settings.input_partitions)
        }

    def feed(self, line: dict[str, Any]) -> None:
        """Process one event line (simulator/replay format, with ``"topic"``)."""
        role, key, value = encode_event(line)
        if role not in ("clickstream", "purchases", "support"):
            return
        try:
            record = decode_event(role, key, value, self._limits, time.time_ns() // 1_000_000)
        except DecodeError as exc:
            self.rejected[exc.kind] = self.rejected.get(exc.kind, 0) + 1
            return
        if isinstance(record, ClickEvent) and (
            record.customer_id is None or record.type == "identify"
        ):
            anonymous_id = str(record.anonymous_id)
            state, released, _ = apply_anonymous(
                self.identities.get(anonymous_id),
                msgspec.to_builtins(record),
                self.settings.anonymous_buffer_events,
            )
            self.identities[anonymous_id] = state
            for fields in released:
                self.feed({"topic": "clickstream", **fields})
            return
        fields = msgspec.to_builtins(record)
        fields["topic"] = role
        customer_id = str(record.customer_id)
        partition = partition_for_key(customer_id, self.settings.input_partitions)
        population = self.populations.get(partition)
        if population is None:
            population = self.populations[partition] = new_population()
        # A file is one ordered input: everything before this line has been read.
        profile, _ = update_customer(
            self.profiles.get(customer_id),
            [fields],
            population,
            self._profile_config,
            compound,
            self.input_watermark_ms,
            customer_id,
            self.moments,
            self.segments,
        )
        assert profile is not None  # noqa: S101 - update_customer returns one for any event
        self.profiles[customer_id] = profile
        refile_deadline(
            self._deadlines[partition], customer_id, profile, self.moments, self.segments
        )
        population["watermark_ms"] = max(population.get("watermark_ms", 0), int(record.ts))
        self.watermark_ms = max(self.watermark_ms, int(record.ts))
        self.input_watermark_ms = max(self.input_watermark_ms or 0, int(record.ts))
        for p, index in self._deadlines.items():
            if p not in self.populations:
                self.populations[p] = new_population()
            fire_deadlines(
                index,
                self.input_watermark_ms,
                self.profiles.get,
                self.moments,
                self.segments,
                self.populations[p],
            )
        for example in self.moments.examples:
            self.models.learn(example)
        self.moments.examples.clear()

    def summaries(self, as_of_ms: int | None = None) -> Iterator[dict[str, Any]]:
        """Every customer's profile as of ``as_of_ms`` (default: the last event)."""
        as_of = self.watermark_ms if as_of_ms is None else as_of_ms
        population = Population(
            rfm=combined_rfm(self.populations.values()),
            bgnbd=combined_bgnbd(self.populations.values()),
        )
        value_config = self.settings.value_config()
        for customer_id in sorted(self.profiles):
            yield customer_view(
                customer_id,
                self.profiles[customer_id],
                self._profile_config,
                as_of,
                population,
                value_config,
                self.models,
            )


def score_against_truth(
    profiles: Iterable[dict[str, Any]], truth: Iterable[CustomerTruth]
) -> dict[str, Any]:
    """How well the models recovered what the simulator planted.

    ``adjusted_rand_index`` compares cluster ids with the planted personas;
    ``churn_roc_auc`` ranks every customer's churn probability against
    whether they were planted as fading (``truth.churns``).
    """
    by_id = {p["customer_id"]: p for p in profiles}
    ari = metrics.AdjustedRand()
    auc = metrics.ROCAUC()
    scored = 0
    for customer in truth:
        profile = by_id.get(customer.customer_id)
        if profile is None:
            continue
        scores = profile["scores"]
        scored += 1
        if scores["cluster_id"] is not None:
            ari.update(customer.persona, scores["cluster_id"])
        auc.update(customer.churns, scores["churn_probability"])
    return {
        "customers": scored,
        "adjusted_rand_index": round(float(ari.get()), 4),
        "churn_roc_auc": round(float(auc.get()), 4),
    }


def evaluate(
    lines: Iterable[dict[str, Any]], settings: Settings, cutoff_ms: int | None = None
) -> OfflineRun:
    """Replay ``lines`` (in file order) up to ``cutoff_ms``; return the run."""
    run = OfflineRun(settings)
    for line in lines:
        if cutoff_ms is not None and "ts" in line and parse_event_time(line["ts"]) > cutoff_ms:
            continue
        run.feed(line)
    return run
