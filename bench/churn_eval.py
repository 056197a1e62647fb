"""Churn scores against what customers did next, beside trivial baselines.

    .venv/bin/python -m bench.churn_eval --bgnbd 6000 --seed 1 [--out FILE]
    .venv/bin/python -m bench.churn_eval --simulated 2000 --seed 1 [--out FILE]
    .venv/bin/python -m bench.churn_eval --events E.jsonl --truth T.csv --cutoff ISO [--out FILE]

Replays a purchase history through ``segstream evaluate``'s engine up to the
cutoff, scores every customer at the cutoff, and compares, on the same
customers and labels, with exact ROC AUC:

* ``churn_probability`` (the model) against "no order in the holdout";
* recency alone (days since the last order), and days since the last event
  of any kind;
* the online BG/NBD fit's expected orders in the churn horizon (lower = churn);

and the Brier score of ``churn_probability`` against "no order in the 90
days after the cutoff" beside the Brier score of always predicting that base
rate. The history is drawn from the BG/NBD process with the project's own
generator (:mod:`models.purchase_process`); or simulated, every touchpoint,
with the simulator's realistic purchase process (``--simulated``: 39 weeks to
the cutoff, 26 after it; customers who ordered before the cutoff are
scored); or read from a file with a truth CSV
(``customer_id,holdout_active,active_90d``, 1 = ordered).
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import time
from pathlib import Path
from typing import Any

import orjson

from bench.machine import describe, save_results
from models.evaluation import brier, exact_auc
from models.profile import DAY_MS
from models.purchase_process import bgnbd_history, bought_within
from models.simulator import SimConfig, simulate
from schemas.event_time import parse_event_time

RESULTS = Path(__file__).resolve().parent / "results"


def scores_at(events: list[dict[str, Any]], cutoff_ms: int) -> dict[str, dict[str, Any]]:
    """Every customer's profile as ``segstream evaluate`` writes it, as of the cutoff."""
    os.environ.setdefault("SEGSTREAM_MODEL_SNAPSHOT_KEY", secrets.token_hex(16))
    os.environ.setdefault("SEGSTREAM_AUDIT_HASH_KEY", secrets.token_hex(16))
    from streams.offline import evaluate
    from streams.settings import Settings

    run = evaluate(events, Settings(_env_file=None), cutoff_ms)
    return {p["customer_id"]: p for p in run.summaries(cutoff_ms)}


def figures(
    profiles: dict[str, dict[str, Any]], holdout: dict[str, bool], active_90d: dict[str, bool]
) -> dict[str, Any]:
    """Exact AUCs (label: no order in the holdout) and 90-day Brier scores."""
    customers = sorted(c for c in holdout if c in profiles)
    y = [0 if holdout[c] else 1 for c in customers]
    p = [float(profiles[c]["scores"]["churn_probability"]) for c in customers]
    recency = [float(profiles[c]["purchases"]["recency_days"] or 0) for c in customers]
    seen = [float(profiles[c]["days_since_last_seen"]) for c in customers]
    expected_key = next(k for k in profiles[customers[0]]["value"] if k.startswith("expected_"))
    expected = [-(profiles[c]["value"][expected_key] or 0.0) for c in customers]
    y90 = [0 if active_90d[c] else 1 for c in customers]
    rate = sum(y90) / len(y90)
    out = {
        "customers": len(customers),
        "scored_by": sorted({profiles[c]["scores"]["churn_source"] for c in customers}),
        "auc_model": exact_auc(y, p),
        "auc_recency": exact_auc(y, recency),
        "auc_seen_recency": exact_auc(y, seen),
        "auc_bgnbd_online": exact_auc(y, expected),
        "brier_90d_model": brier(y90, p),
        "brier_90d_base_rate": brier(y90, [rate] * len(y90)),
        "mean_p": sum(p) / len(p),
        "churn_rate_90d": rate,
    }
    best = max(out["auc_recency"] or 0, out["auc_seen_recency"] or 0, out["auc_bgnbd_online"] or 0)
    out["lift_over_best_baseline"] = (out["auc_model"] or 0) - best
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def simulated_history(
    customers: int, seed: int, calibration_days: int = 273, holdout_days: int = 182
) -> tuple[list[dict[str, Any]], int, dict[str, bool], dict[str, bool]]:
    """A realistic simulator run cut at the end of calibration: the events up to
    the cutoff, the cutoff, and per customer who ordered before it whether they
    ordered in the holdout and in its first 90 days."""
    config = SimConfig(
        customers=customers, days=calibration_days + holdout_days, seed=seed, process="realistic"
    )
    events, _ = simulate(config)
    start_ms = int(config.start.timestamp() * 1000)
    cutoff = start_ms + calibration_days * DAY_MS
    before: list[dict[str, Any]] = []
    buyers: set[str] = set()
    later: dict[str, list[int]] = {}  # order times after the cutoff
    for event in events:
        ts = parse_event_time(event["ts"])
        if ts <= cutoff:
            before.append(event)
            if event["type"] == "order":
                buyers.add(event["customer_id"])
        elif event["type"] == "order":
            later.setdefault(event["customer_id"], []).append(ts)
    holdout = {c: c in later for c in buyers}
    active_90d = {c: any(t <= cutoff + 90 * DAY_MS for t in later.get(c, ())) for c in buyers}
    return before, cutoff, holdout, active_90d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bgnbd", type=int, help="draw this many BG/NBD customers")
    parser.add_argument(
        "--simulated", type=int, help="simulate this many customers (realistic process)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=Path)
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--cutoff")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    if args.bgnbd:
        history = bgnbd_history(args.bgnbd, args.seed)
        events, cutoff = history.events, history.cutoff_ms
        holdout = {c: bool(times) for c, times in history.holdout_ms.items()}
        active_90d = bought_within(history, 90)
        source = f"models.purchase_process BG/NBD, {args.bgnbd} customers, seed {args.seed}"
    elif args.simulated:
        events, cutoff, holdout, active_90d = simulated_history(args.simulated, args.seed)
        source = f"models.simulator realistic process, {args.simulated} customers, seed {args.seed}"
    else:
        events = [orjson.loads(line) for line in args.events.read_bytes().splitlines() if line]
        cutoff = parse_event_time(args.cutoff)
        with open(args.truth) as handle:
            rows = list(csv.DictReader(handle))
        holdout = {r["customer_id"]: r["holdout_active"] == "1" for r in rows}
        active_90d = {r["customer_id"]: r["active_90d"] == "1" for r in rows}
        source = str(args.events)
    result = {"history": source, **figures(scores_at(events, cutoff), holdout, active_90d)}
    result["seconds"] = round(time.monotonic() - started, 1)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        save_results({"benchmark": "churn_eval", "machine": describe(), **result}, args.out)


if __name__ == "__main__":
    main()
