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

from models.identity import apply_anonymous
from models.pipeline import (
    PopulationState,
    combined_bgnbd,
    combined_rfm,
    new_population,
    update_customer,
)
from models.profile import Profile
from models.profile_summary import Population, summarise
from models.sentiment import compound
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
        )
        assert profile is not None  # noqa: S101 - update_customer returns one for any event
        self.profiles[customer_id] = profile
        population["watermark_ms"] = max(population.get("watermark_ms", 0), int(record.ts))
        self.watermark_ms = max(self.watermark_ms, int(record.ts))
        self.input_watermark_ms = max(self.input_watermark_ms or 0, int(record.ts))

    def summaries(self, as_of_ms: int | None = None) -> Iterator[dict[str, Any]]:
        """Every customer's profile as of ``as_of_ms`` (default: the last event)."""
        as_of = self.watermark_ms if as_of_ms is None else as_of_ms
        population = Population(
            rfm=combined_rfm(self.populations.values()),
            bgnbd=combined_bgnbd(self.populations.values()),
        )
        for customer_id in sorted(self.profiles):
            yield {
                "customer_id": customer_id,
                **summarise(
                    self.profiles[customer_id],
                    self.settings.profile_config(),
                    as_of,
                    population,
                    self.settings.value_config(),
                ),
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
