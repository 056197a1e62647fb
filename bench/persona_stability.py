"""Do personas hold still when only the model moves? Persona moves per model update, measured.

    .venv/bin/python -m bench.persona_stability [--customers 400] [--days 150] [--seed 21]
        [--process planted|realistic] [--out FILE]

Simulates a history and replays it through ``segstream evaluate``'s engine,
keeping a copy of the model as it stood half way. At the end, every
customer's segments are decided twice at the same event time — so with the
same features — first under the half-way model, then under the final one,
through the engine's own :class:`models.segments.Segmenter`. Every persona
move in the second decision (a change, or one held back by the dwell) is
caused by the model update alone. Counted under two rules, side by side:

* ``settled`` — the rule the engine uses
  (:func:`models.segments.settled_persona`): a persona moves only when the
  customer's own features cross a boundary of the current model;
* ``nearest`` — the persona of the nearest cluster, whatever moved.

Also reported: every persona change the whole replay published under each
rule (model updates and customers' own moves together), and the clusters'
labels under both models.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

import models.segments
from bench.machine import describe, save_results
from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def rule(name: str) -> Iterator[None]:
    """Decide personas under ``name``: ``settled`` (the engine's) or ``nearest``."""
    settled = models.segments.settled_persona
    if name == "nearest":
        models.segments.settled_persona = lambda profile, held, x, candidate, scorer: candidate  # type: ignore[assignment]
    try:
        yield
    finally:
        models.segments.settled_persona = settled  # type: ignore[assignment]


def measure(customers: int, days: int, seed: int, process: str) -> dict[str, Any]:
    """Persona moves a model update alone causes, under both rules."""
    os.environ.setdefault("SEGSTREAM_MODEL_SNAPSHOT_KEY", secrets.token_hex(16))
    os.environ.setdefault("SEGSTREAM_AUDIT_HASH_KEY", secrets.token_hex(16))
    from streams.offline import OfflineRun
    from streams.settings import Settings

    settings = Settings(_env_file=None)
    events, _ = simulate(SimConfig(customers=customers, days=days, seed=seed, process=process))  # type: ignore[arg-type]
    times = [parse_event_time(e["ts"]) for e in events]
    halfway = min(times) + days * 86_400_000 // 2
    result: dict[str, Any] = {
        "history": f"simulator ({process}), {customers} customers, {days} days, seed {seed}",
    }
    for name in ("settled", "nearest"):
        with rule(name):
            run = OfflineRun(settings)
            early = None
            for line, ts in zip(events, times, strict=True):
                if early is None and ts > halfway:
                    early = copy.deepcopy(run.models)
                run.feed(line)
            if early is None:
                raise SystemExit("the history is too short to have a half-way model")
            late = run.models
            replay_changes = sum(1 for c in run.outputs.changes if c["dimension"] == "persona")
            moved, decided = 0, 0
            now = run.watermark_ms
            for engine in run.engines.values():
                population = engine._population()
                for customer_id, stored in engine.stores.profiles.data.items():  # type: ignore[attr-defined]
                    profile = copy.deepcopy(stored)
                    # A clean start: the persona as the half-way model puts the
                    # customer's features now, then the final model.
                    profile.get("segments", {}).pop("persona", None)
                    profile.pop("persona_anchor", None)
                    run.models = early
                    engine._segmenter().decide(customer_id, profile, now, population)
                    if "persona" not in profile.get("segments", {}):
                        continue
                    before = profile["segments"]["persona"]["value"]
                    run.models = late
                    segmenter = engine._segmenter()
                    segmenter.decide(customer_id, profile, now, population)
                    after = profile["segments"]["persona"]
                    decided += 1
                    moved += int(after["value"] != before or "pending" in after)
            result[name] = {
                "customers_decided": decided,
                "persona_moves_from_the_model_update_alone": moved,
                "persona_changes_in_the_replay": replay_changes,
            }
            result["labels"] = {
                "half_way": {str(i): label for i, label in early.personas().items()},
                "final": {str(i): label for i, label in late.personas().items()},
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--process", choices=("planted", "realistic"), default="planted")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    result = measure(args.customers, args.days, args.seed, args.process)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        save_results({"benchmark": "persona_stability", "machine": describe(), **result}, args.out)


if __name__ == "__main__":
    main()
