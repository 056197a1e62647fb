"""Cost of the online models per call and per event, measured offline.

    .venv/bin/python -m bench.model_bench [--customers 1000] [--days 120]
        [--out bench/results/models.json]

On one simulator history (a realistic mix of all three topics), side by side
in one run:

* per call: ``feature_vector``, ``ModelBundle.score`` (churn + cluster),
  learning one cluster example, learning one churn example, and signing +
  verifying a snapshot;
* per event: the whole offline pipeline (``OfflineRun.feed``) with the
  models, and ``update_customer`` alone without them — the difference is
  what moments, scoring and learning add, and how often they happen
  (moments per 1,000 events).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import describe, save_results
from models.churn_features import model_inputs
from models.features import FEATURES, feature_vector
from models.pipeline import new_population, update_customer
from models.simulator import SimConfig, simulate
from models.training import decode_snapshot, encode_snapshot
from schemas.decode import DecodeLimits, decode_event
from streams.offline import OfflineRun
from streams.producer import encode_event
from streams.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--out", type=Path, default=RESULTS / "models.json")
    args = parser.parse_args()

    events, _ = simulate(SimConfig(customers=args.customers, days=args.days, seed=2027))
    settings = Settings(_env_file=None, store="memory", churn_horizon_days=30)

    # The whole pipeline with models (moments, scoring, learning in process).
    run = OfflineRun(settings)
    examples = {"cluster": 0, "churn": 0}
    learn = run.models.learn

    def counting_learn(example: dict[str, Any], offset: int | None = None) -> bool:
        examples[example["kind"]] += 1
        return learn(example, offset)

    run.models.learn = counting_learn  # type: ignore[method-assign]
    start = time.perf_counter()
    for line in events:
        run.feed(line)
    with_models_s = time.perf_counter() - start

    # State updates alone, on the same decoded events.
    limits = DecodeLimits()
    decoded = []
    for line in events:
        role, key, value = encode_event(line)
        record = decode_event(role, key, value, limits, time.time_ns() // 1_000_000)
        decoded.append(({**_builtins(record), "topic": role}, str(record.customer_id)))
    config = settings.profile_config()
    profiles: dict[str, Any] = {}
    population = new_population()
    start = time.perf_counter()
    for fields, customer in decoded:
        state = profiles.get(customer)
        profiles[customer], _ = update_customer(state, [fields], population, config)
    state_only_s = time.perf_counter() - start

    run.models.learn = learn  # type: ignore[method-assign]
    del run.models.learn  # back to the class's method, so the bundle pickles
    bundle = run.models
    profile = next(iter(run.profiles.values()))
    as_of = run.watermark_ms
    bgnbd = run.populations[0]["bgnbd"]
    x = model_inputs(profile, config, as_of, bgnbd, bundle.horizon_days)
    key = b"bench"
    snapshot = encode_snapshot(bundle, key)
    costs = {
        "feature_vector_us": per_call_us(lambda: feature_vector(profile, config, as_of), 2000),
        # Both models' inputs (clustering features, then the churn features).
        "model_inputs_us": per_call_us(
            lambda: model_inputs(profile, config, as_of, bgnbd, bundle.horizon_days), 2000
        ),
        "score_us": per_call_us(lambda: bundle.score(x), 2000),
        "learn_cluster_example_us": per_call_us(
            lambda: bundle.clusters.learn_one({n: x[n] for n in FEATURES}), 2000
        ),
        "learn_churn_example_us": per_call_us(lambda: bundle.churn.learn_one(x, 1), 2000),
        "snapshot_encode_ms": per_call_us(lambda: encode_snapshot(bundle, key), 20) / 1000,
        "snapshot_decode_ms": per_call_us(lambda: decode_snapshot(snapshot, key), 20) / 1000,
    }
    result = {
        "machine": describe(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "workload": {"customers": args.customers, "days": args.days, "events": len(decoded)},
        "per_call": {k: round(v, 2) for k, v in costs.items()},
        "snapshot_bytes": len(snapshot),
        "examples": examples,
        "examples_per_1000_events": round(sum(examples.values()) / len(decoded) * 1000, 1),
        "offline_events_per_s": {
            "pipeline_with_models": round(len(events) / with_models_s),
            "state_update_only": round(len(decoded) / state_only_s),
        },
        "per_event_us": {
            "pipeline_with_models": round(with_models_s / len(events) * 1e6, 1),
            "state_update_only": round(state_only_s / len(decoded) * 1e6, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_results(result, args.out, echo=True)


def _builtins(record: Any) -> dict[str, Any]:
    import msgspec

    fields: dict[str, Any] = msgspec.to_builtins(record)
    return fields


if __name__ == "__main__":
    main()
